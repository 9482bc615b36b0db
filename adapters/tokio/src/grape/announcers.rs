//! Who announced what through this grape: the rule that only the client that announced a
//! service may `/unannounce` it.
//!
//! The DHT stores an announce as (the grape's address, port): nothing in it says which HTTP
//! client asked for it, so without this record any client of any grape could withdraw any
//! worker announced through that grape. Here every `/announce` remembers the client's IP
//! under (name, port) for as long as the DHT keeps the peer ([`ApiConfig::announce_ttl`], the
//! peer TTL; refreshed by every announce), and an `/unannounce` of (name, port) is refused with
//! [`FORBIDDEN`] unless the requesting IP announced it and no other IP did within that time.
//! A worker that announced through the grape (the Node Link flow) can always unannounce
//! through it from the same address.
//!
//! Memory: at most [`MAX_RECORDS`] (name, port) records of at most [`MAX_ANNOUNCERS`] IPs
//! each, and one client IP claims at most [`MAX_PER_CLIENT`] of them (a quarter), so that one
//! host announcing thousands of names cannot fill the record for everyone else. When full,
//! expired records are dropped (at most once a second); if none expired, or the client has
//! its share, a new announce is not recorded. The failure mode of an exhausted record is
//! safe: the unannounce is refused and the peer expires with its TTL.
//!
//! [`ApiConfig::announce_ttl`]: super::ApiConfig::announce_ttl

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The answer to an `/unannounce` of a (name, port) this client did not announce through this
/// grape, or that another client announced too.
pub const FORBIDDEN: &str = "ERR_GRAPE_UNANNOUNCE_FORBIDDEN";
/// Remembered (name, port) pairs: as many as the DHT stores peers (`grape::node::PEERS`).
pub(crate) const MAX_RECORDS: usize = 10_240;
/// IPs remembered per (name, port): one worker host, plus a few for a failover.
pub(crate) const MAX_ANNOUNCERS: usize = 4;
/// Records one client IP may claim: a quarter of [`MAX_RECORDS`], the share the API gives one
/// client of its connections too.
pub(crate) const MAX_PER_CLIENT: usize = MAX_RECORDS / 4;
/// How often a full table may be swept for expired records (a sweep walks the whole table).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The announcers of one (name, port): (IP, when its claim expires; `None`: never).
type Claims = Vec<(IpAddr, Option<Instant>)>;

/// See the module documentation.
pub(crate) struct Announcers {
    inner: Mutex<Inner>,
    /// How long a claim lives after the announce; zero: as long as the record is kept.
    ttl: Duration,
}

struct Inner {
    records: HashMap<(Vec<u8>, u16), Claims>,
    /// Claims per client IP in `records` (expired ones included until they are dropped); an
    /// IP leaves the map with its last claim.
    per_client: HashMap<IpAddr, usize>,
    last_sweep: Option<Instant>,
}

impl Inner {
    /// Counts `claims` as gone from the record.
    fn forget(&mut self, claims: impl IntoIterator<Item = IpAddr>) {
        for ip in claims {
            if let Some(n) = self.per_client.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_client.remove(&ip);
                }
            }
        }
    }

    /// Drops the expired claims of `claims`, keeping the per-client counts right.
    fn expire(&mut self, claims: &mut Claims, now: Instant) {
        let mut gone = Vec::new();
        claims.retain(|(ip, expiry)| {
            let keep = live(*expiry, now);
            if !keep {
                gone.push(*ip);
            }
            keep
        });
        self.forget(gone);
    }
}

/// Whether `expiry` is still in the future at `now`.
fn live(expiry: Option<Instant>, now: Instant) -> bool {
    expiry.is_none_or(|at| at > now)
}

impl Announcers {
    /// A record whose claims live `ttl` (zero: never expire).
    pub(crate) fn new(ttl: Duration) -> Self {
        Announcers {
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                per_client: HashMap::new(),
                last_sweep: None,
            }),
            ttl,
        }
    }

    /// The table; a poisoned lock only means a panic elsewhere while it was held, and every
    /// change is a single insert or remove, so keep using it.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `client` announced `name` on `port` (the port the DHT announces: 0 already
    /// replaced by the grape's DHT port).
    pub(crate) fn announced(&self, name: &[u8], port: u16, client: IpAddr) {
        let now = Instant::now();
        let expiry = (!self.ttl.is_zero()).then(|| now + self.ttl);
        let mut inner = self.inner();
        let key = (name.to_vec(), port);
        if !inner.records.contains_key(&key) && inner.records.len() >= MAX_RECORDS {
            let due = inner
                .last_sweep
                .is_none_or(|at| now.duration_since(at) >= SWEEP_INTERVAL);
            if due {
                inner.last_sweep = Some(now);
                let mut records = std::mem::take(&mut inner.records);
                records.retain(|_, claims| {
                    inner.expire(claims, now);
                    !claims.is_empty()
                });
                inner.records = records;
            }
            if inner.records.len() >= MAX_RECORDS {
                return;
            }
        }
        let mut claims = inner.records.remove(&key).unwrap_or_default();
        inner.expire(&mut claims, now);
        let has_share = inner.per_client.get(&client).copied().unwrap_or(0) < MAX_PER_CLIENT;
        if let Some(claim) = claims.iter_mut().find(|(ip, _)| *ip == client) {
            claim.1 = expiry;
        } else if claims.len() < MAX_ANNOUNCERS && has_share {
            claims.push((client, expiry));
            *inner.per_client.entry(client).or_insert(0) += 1;
        }
        if !claims.is_empty() {
            inner.records.insert(key, claims);
        }
    }

    /// Whether `client` may withdraw `name` on `port`: it announced it, and nobody else did,
    /// within the TTL.
    pub(crate) fn may_unannounce(&self, name: &[u8], port: u16, client: IpAddr) -> bool {
        let now = Instant::now();
        let inner = self.inner();
        let Some(claims) = inner.records.get(&(name.to_vec(), port)) else {
            return false;
        };
        let mut live_claims = claims.iter().filter(|(_, expiry)| live(*expiry, now));
        let mut any = false;
        let only_client = live_claims.all(|(ip, _)| {
            any = true;
            *ip == client
        });
        any && only_client
    }

    /// Forgets `name` on `port` after it was withdrawn.
    pub(crate) fn unannounced(&self, name: &[u8], port: u16) {
        let mut inner = self.inner();
        if let Some(claims) = inner.records.remove(&(name.to_vec(), port)) {
            inner.forget(claims.into_iter().map(|(ip, _)| ip));
        }
    }

    /// Remembered (name, port) pairs.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner().records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HONEST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[tokio::test(start_paused = true)]
    async fn only_the_announcer_may_unannounce() {
        let record = Announcers::new(Duration::from_secs(120));
        assert!(
            !record.may_unannounce(b"svc", 1337, HONEST),
            "never announced"
        );
        record.announced(b"svc", 1337, HONEST);
        assert!(record.may_unannounce(b"svc", 1337, HONEST));
        assert!(!record.may_unannounce(b"svc", 1337, OTHER));
        assert!(!record.may_unannounce(b"svc", 1338, HONEST), "another port");
        assert!(
            !record.may_unannounce(b"other", 1337, HONEST),
            "another name"
        );
        record.unannounced(b"svc", 1337);
        assert!(!record.may_unannounce(b"svc", 1337, HONEST));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_announcer_blocks_both_until_its_claim_expires() {
        let record = Announcers::new(Duration::from_secs(120));
        record.announced(b"svc", 1337, HONEST);
        record.announced(b"svc", 1337, OTHER);
        assert!(!record.may_unannounce(b"svc", 1337, OTHER));
        assert!(!record.may_unannounce(b"svc", 1337, HONEST));
        tokio::time::advance(Duration::from_secs(60)).await;
        // The honest worker re-announces; the other claim runs out first.
        record.announced(b"svc", 1337, HONEST);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(record.may_unannounce(b"svc", 1337, HONEST));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!record.may_unannounce(b"svc", 1337, HONEST), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_never_expires() {
        let record = Announcers::new(Duration::ZERO);
        record.announced(b"svc", 1, HONEST);
        tokio::time::advance(Duration::from_secs(1_000_000)).await;
        assert!(record.may_unannounce(b"svc", 1, HONEST));
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_cannot_fill_the_record_for_others() {
        let record = Announcers::new(Duration::from_secs(10));
        for i in 0..MAX_RECORDS {
            record.announced(i.to_string().as_bytes(), 1, OTHER);
        }
        assert_eq!(record.len(), MAX_PER_CLIENT);
        record.announced(b"honest", 1, HONEST);
        assert!(record.may_unannounce(b"honest", 1, HONEST));
        // Its own records it still refreshes, and a withdrawn one gives its share back.
        record.announced(b"0", 1, OTHER);
        assert!(record.may_unannounce(b"0", 1, OTHER));
        record.unannounced(b"0", 1);
        record.announced(b"new", 1, OTHER);
        assert!(record.may_unannounce(b"new", 1, OTHER));
        record.announced(b"newer", 1, OTHER);
        assert!(
            !record.may_unannounce(b"newer", 1, OTHER),
            "over its share again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_expired_records_make_room() {
        let record = Announcers::new(Duration::from_secs(10));
        // Five clients, each up to its share: more than the record holds.
        for client in 0..5u8 {
            for i in 0..MAX_PER_CLIENT {
                let name = format!("{client}:{i}");
                record.announced(name.as_bytes(), 1, IpAddr::from([10, 0, 1, client]));
            }
        }
        assert_eq!(record.len(), MAX_RECORDS);
        record.announced(b"late", 1, HONEST);
        assert!(
            !record.may_unannounce(b"late", 1, HONEST),
            "not recorded when full"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        record.announced(b"late", 1, HONEST);
        assert!(record.may_unannounce(b"late", 1, HONEST));
        assert_eq!(record.len(), 1);
        // Per (name, port), at most MAX_ANNOUNCERS IPs.
        for last in 0..10u8 {
            record.announced(b"busy", 1, IpAddr::from([10, 0, 0, last]));
        }
        let inner = record.inner();
        let claims = inner.records.get(&(b"busy".to_vec(), 1));
        assert_eq!(claims.map(Vec::len), Some(MAX_ANNOUNCERS));
    }
}
