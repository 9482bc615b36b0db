//! Coalescing of `/lookup`s of the same name: one DHT traversal answers many requests.
//!
//! A busy grape gets the same lookup from many clients at once (every Link looks its services
//! up again once its own 10 s cache expires). Without coalescing, each request hops to the DHT
//! thread and starts its own `get_peers` traversal. Here:
//!
//! * the first request of a name (the *leader*) runs the traversal, and every request of the
//!   same name that arrives while it runs (a *follower*) gets the leader's answer;
//! * a non-empty answer is then reused for [`ApiConfig::lookup_reuse`] (100 ms by default; zero
//!   turns reuse off), so a grape under load runs at most about ten traversals a second per
//!   name. An empty answer is never reused (a client waiting for its first worker sees it as
//!   soon as the DHT has it); an `/announce` or `/unannounce` of a name through this grape
//!   drops that name's answer; and any change of this grape's own peer store (a new peer, an
//!   unannounce or an expiry received over the DHT: [`GrapeDht::store_changes`]) drops every
//!   kept answer.
//!
//! So an answer is at most the reuse window plus one traversal old, and only a change that
//! happened on other nodes alone (which this grape could not have seen anyway without a new
//! traversal) can be missing from it. The Node grape trades
//! freshness the other way: it runs a traversal for every request and adds peers from its
//! `_mem` cache, up to 80 s old, to each answer; Link clients cache answers for 10 s.
//!
//! A leader whose HTTP connection goes away is cancelled with its request; its followers then
//! see the channel close and try again (one of them becomes the new leader), at most
//! [`MAX_ATTEMPTS`] times before they run a traversal of their own.
//!
//! Memory: one entry per name being looked up now (at most one per open connection, which the
//! API caps), plus at most [`ApiConfig::max_reused_lookups`] reusable answers (5000 by
//! default, `--dht_maxTables`).
//!
//! [`ApiConfig::lookup_reuse`]: super::ApiConfig::lookup_reuse
//! [`ApiConfig::max_reused_lookups`]: super::ApiConfig::max_reused_lookups

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::dht::GrapeDht;

/// How many leaders a follower waits for before it runs the traversal itself. Only a leader
/// that was cancelled (its client hung up) makes a follower try again.
const MAX_ATTEMPTS: usize = 3;

/// The answer of one traversal, shared by all the requests that waited for it.
type Answer = Arc<LookupAnswer>;

/// The peers a traversal found, and the `/lookup` body they make (rendered once, for every
/// request that gets this answer).
pub(crate) struct LookupAnswer {
    /// The peers, in the DHT's order.
    pub(crate) peers: Vec<SocketAddrV4>,
    /// `render_peers(peers)`: the JSON body of the answer, shared by every request it answers.
    pub(crate) json: bytes::Bytes,
}

impl LookupAnswer {
    fn new(peers: Vec<SocketAddrV4>) -> Answer {
        let json = render_peers(&peers).into();
        Arc::new(LookupAnswer { peers, json })
    }
}

/// What the coalescer knows about one name.
enum Entry {
    /// A traversal is running; its answer will be sent on this channel.
    Running(watch::Receiver<Option<Answer>>),
    /// The answer of a traversal that ended at `at`, reusable until `at + reuse` while the
    /// DHT's store change counter is still `store`.
    Done {
        at: Instant,
        store: u64,
        answer: Answer,
    },
}

/// The lookups running now and the answers that may be reused, by name. See the module
/// documentation.
pub(crate) struct LookupCoalescer {
    /// Read-mostly: the API's serving loops (`crate::loops`) read a reusable answer under the
    /// shared lock, so they do not wait for each other; only a new traversal and its end write.
    entries: RwLock<HashMap<Vec<u8>, Entry>>,
    reuse: Duration,
    /// Reusable answers kept at most; when full, expired ones are dropped, and if none has
    /// expired a new answer is simply not kept.
    max_reused: usize,
}

/// Either this request runs the traversal, waits for the one that does, or has its answer.
enum Role {
    Leader(watch::Sender<Option<Answer>>),
    Follower(watch::Receiver<Option<Answer>>),
    Reuse(Answer),
}

impl LookupCoalescer {
    /// A coalescer reusing non-empty answers for `reuse`, keeping at most `max_reused` of them
    /// (either zero: only concurrent requests share a traversal).
    pub(crate) fn new(reuse: Duration, max_reused: usize) -> Self {
        LookupCoalescer {
            entries: RwLock::new(HashMap::new()),
            reuse,
            max_reused,
        }
    }

    /// The peers announced under `name`: the answer of a traversal started for this request, of
    /// the one of the same name that was running when it arrived, or a reusable recent one.
    pub(crate) async fn lookup<D: GrapeDht>(&self, dht: &D, name: Vec<u8>) -> Answer {
        for _ in 0..MAX_ATTEMPTS {
            match self.role(&name, dht.store_changes()) {
                Role::Reuse(answer) => return answer,
                Role::Leader(sender) => return self.lead(dht, name, sender).await,
                Role::Follower(mut receiver) => {
                    if let Ok(answer) = receiver.wait_for(Option::is_some).await {
                        if let Some(answer) = answer.as_ref() {
                            return Arc::clone(answer);
                        }
                    }
                    // The leader was cancelled before it answered: try again.
                }
            }
        }
        LookupAnswer::new(dht.lookup(name).await)
    }

    /// Drops what is known of `name` (after an announce or unannounce through this grape): its
    /// reusable answer, and its running traversal, which still answers the requests already
    /// waiting for it but is neither joined by later requests nor kept for reuse.
    pub(crate) fn forget(&self, name: &[u8]) {
        self.entries().remove(name);
    }

    /// The map to change; a poisoned lock only means a panic elsewhere while it was held, and
    /// the map is always consistent (single inserts and removes), so keep using it.
    fn entries(&self) -> RwLockWriteGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The map to read (see [`LookupCoalescer::entries`] about poisoning).
    fn read_entries(&self) -> RwLockReadGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the running lookup of `name`, reuses its recent answer, or registers a new lookup
    /// led by the caller.
    fn role(&self, name: &[u8], store: u64) -> Role {
        // The common case, a reusable answer or a running traversal, only reads.
        if let Some(role) = self.existing_role(&self.read_entries(), name, store) {
            return role;
        }
        let mut entries = self.entries();
        // Another request may have registered a traversal between the two locks.
        if let Some(role) = self.existing_role(&entries, name, store) {
            return role;
        }
        let (sender, receiver) = watch::channel(None);
        entries.insert(name.to_vec(), Entry::Running(receiver));
        Role::Leader(sender)
    }

    /// The role `entries` gives a request for `name` without changing it: reuse or follow;
    /// `None` when the request must lead a traversal.
    fn existing_role(
        &self,
        entries: &HashMap<Vec<u8>, Entry>,
        name: &[u8],
        store: u64,
    ) -> Option<Role> {
        match entries.get(name) {
            Some(Entry::Done {
                at,
                store: kept,
                answer,
            }) if at.elapsed() < self.reuse && *kept == store => {
                Some(Role::Reuse(Arc::clone(answer)))
            }
            // A receiver whose sender is gone belongs to a cancelled leader: replace it.
            Some(Entry::Running(receiver)) if receiver.has_changed().is_ok() => {
                Some(Role::Follower(receiver.clone()))
            }
            _ => None,
        }
    }

    /// Runs the traversal, hands the answer to the followers and keeps it for reuse.
    async fn lead<D: GrapeDht>(
        &self,
        dht: &D,
        name: Vec<u8>,
        sender: watch::Sender<Option<Answer>>,
    ) -> Answer {
        // Unregisters the lookup if the leader is cancelled (dropped mid-way). The store
        // counter is read before the traversal: a change during it makes the answer
        // unreusable at once.
        let mut registration = Registration {
            coalescer: self,
            name,
            sender: &sender,
            answer: None,
            store: dht.store_changes(),
        };
        let answer = LookupAnswer::new(dht.lookup(registration.name.clone()).await);
        sender.send_replace(Some(Arc::clone(&answer)));
        registration.answer = Some(Arc::clone(&answer));
        answer
    }
}

/// Ends a leader's entry when dropped: replaced by its reusable answer, or removed (a
/// cancelled leader, an empty answer, reuse off), unless `forget` or another leader already
/// replaced it.
struct Registration<'a> {
    coalescer: &'a LookupCoalescer,
    name: Vec<u8>,
    sender: &'a watch::Sender<Option<Answer>>,
    answer: Option<Answer>,
    store: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let coalescer = self.coalescer;
        let mut entries = coalescer.entries();
        let ours = matches!(
            entries.get(&self.name),
            Some(Entry::Running(receiver)) if receiver.same_channel(&self.sender.subscribe())
        );
        if !ours {
            return;
        }
        let name = std::mem::take(&mut self.name);
        match self.answer.take() {
            Some(answer) if !answer.peers.is_empty() && !coalescer.reuse.is_zero() => {
                // Our own entry is in the map and is replaced, not added.
                let max = coalescer.max_reused;
                if entries.len() > max {
                    let reuse = coalescer.reuse;
                    entries.retain(|_, entry| match entry {
                        Entry::Running(_) => true,
                        Entry::Done { at, .. } => at.elapsed() < reuse,
                    });
                }
                if entries.len() <= max {
                    let at = Instant::now();
                    let store = self.store;
                    entries.insert(name, Entry::Done { at, store, answer });
                } else {
                    entries.remove(&name);
                }
            }
            _ => {
                entries.remove(&name);
            }
        }
    }
}

/// Lookups answer at most this many peers (`_mem.get(ih, 100)`, `Grape.js:208`).
pub const MAX_LOOKUP_PEERS: usize = 100;

/// `["a.b.c.d:port", …]`: distinct peers in the DHT's order, at most [`MAX_LOOKUP_PEERS`], port 0
/// left out.
pub(crate) fn render_peers(peers: &[SocketAddrV4]) -> String {
    let mut seen = HashSet::new();
    let list: Vec<String> = peers
        .iter()
        // Port 0 is never a peer (bittorrent-dht's decodePeers skips it).
        .filter(|peer| peer.port() != 0 && seen.insert(**peer))
        .take(MAX_LOOKUP_PEERS)
        .map(ToString::to_string)
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| String::from("[]"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grape::dht::{DhtError, GetQuery, GotItem, PutItem};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// A DHT that counts traversals. A gated one blocks every lookup until released and
    /// answers `127.0.0.1:(1000 + traversal number + first byte of the name)`; an answering one
    /// answers its peer list at once.
    #[derive(Default)]
    struct FakeDht {
        traversals: AtomicUsize,
        gated: bool,
        release: Notify,
        peers: Mutex<Vec<SocketAddrV4>>,
        store: AtomicU64,
    }

    impl FakeDht {
        fn gated() -> Self {
            FakeDht {
                gated: true,
                ..FakeDht::default()
            }
        }
        fn answering(ports: &[u16]) -> Self {
            let peers = ports.iter().map(|&port| local(port)).collect();
            FakeDht {
                peers: Mutex::new(peers),
                ..FakeDht::default()
            }
        }
        fn traversals(&self) -> usize {
            self.traversals.load(Ordering::SeqCst)
        }
    }

    fn local(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, 1].into(), port)
    }

    impl GrapeDht for FakeDht {
        async fn lookup(&self, name: Vec<u8>) -> Vec<SocketAddrV4> {
            let n = self.traversals.fetch_add(1, Ordering::SeqCst);
            if !self.gated {
                return self.peers.lock().expect("lock").clone();
            }
            self.release.notified().await;
            let port = u16::try_from(n).unwrap_or(0) + 1000 + u16::from(name[0]);
            vec![local(port)]
        }
        async fn announce(&self, _: Vec<u8>, _: u16) -> Result<usize, DhtError> {
            Err(DhtError::NoNodes)
        }
        async fn unannounce(&self, _: Vec<u8>, _: u16) -> Result<usize, DhtError> {
            Err(DhtError::NoNodes)
        }
        async fn put(&self, _: PutItem) -> Result<[u8; 20], DhtError> {
            Err(DhtError::NoNodes)
        }
        async fn get(&self, _: GetQuery) -> Result<Option<GotItem>, DhtError> {
            Ok(None)
        }
        fn dht_port(&self) -> u16 {
            1
        }
        fn store_changes(&self) -> u64 {
            self.store.load(Ordering::SeqCst)
        }
    }

    /// Lets the spawned lookups reach their await points.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_traversal() {
        let dht = Arc::new(FakeDht::gated());
        let coalescer = Arc::new(LookupCoalescer::new(Duration::ZERO, 5000));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tasks.push(tokio::spawn(async move {
                coalescer.lookup(dht.as_ref(), b"a".to_vec()).await
            }));
        }
        settle().await;
        assert_eq!(dht.traversals(), 1);
        dht.release.notify_waiters();
        for task in tasks {
            let answer = task.await.expect("task");
            assert_eq!(answer.peers[0].port(), 1000 + u16::from(b'a'));
        }
        assert!(coalescer.entries().is_empty());
    }

    #[tokio::test]
    async fn different_names_and_later_requests_start_their_own_traversal() {
        let dht = Arc::new(FakeDht::gated());
        let coalescer = Arc::new(LookupCoalescer::new(Duration::ZERO, 5000));
        let spawn = |name: &'static [u8]| {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tokio::spawn(async move { coalescer.lookup(dht.as_ref(), name.to_vec()).await })
        };
        let (a, b) = (spawn(b"a"), spawn(b"b"));
        settle().await;
        assert_eq!(dht.traversals(), 2);
        dht.release.notify_waiters();
        a.await.expect("a");
        b.await.expect("b");
        // The first traversal is over: a new request does not get its answer.
        let again = spawn(b"a");
        settle().await;
        assert_eq!(dht.traversals(), 3);
        dht.release.notify_waiters();
        assert_eq!(
            again.await.expect("again").peers[0].port(),
            1002 + u16::from(b'a')
        );
    }

    #[tokio::test]
    async fn followers_of_a_cancelled_leader_get_an_answer() {
        let dht = Arc::new(FakeDht::gated());
        let coalescer = Arc::new(LookupCoalescer::new(Duration::ZERO, 5000));
        let leader = {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tokio::spawn(async move { coalescer.lookup(dht.as_ref(), b"a".to_vec()).await })
        };
        settle().await;
        let follower = {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tokio::spawn(async move { coalescer.lookup(dht.as_ref(), b"a".to_vec()).await })
        };
        settle().await;
        assert_eq!(dht.traversals(), 1);
        // The leader's client hangs up: the follower leads a new traversal.
        leader.abort();
        settle().await;
        assert_eq!(dht.traversals(), 2);
        dht.release.notify_waiters();
        let answer = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follower answered")
            .expect("task");
        assert_eq!(answer.peers[0].port(), 1001 + u16::from(b'a'));
        assert!(coalescer.entries().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_the_local_store_drops_kept_answers() {
        let dht = FakeDht::answering(&[1337]);
        let coalescer = LookupCoalescer::new(Duration::from_secs(10), 5000);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 1);
        // An unannounce reached this grape over the DHT.
        dht.store.fetch_add(1, Ordering::SeqCst);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 2);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_reused_inside_the_window_only() {
        let dht = FakeDht::answering(&[1337]);
        let coalescer = LookupCoalescer::new(Duration::from_millis(100), 5000);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        tokio::time::advance(Duration::from_millis(99)).await;
        let answer = coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!((dht.traversals(), answer.peers[0].port()), (1, 1337));
        tokio::time::advance(Duration::from_millis(1)).await;
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 2);
        // Another name has its own answer.
        coalescer.lookup(&dht, b"b".to_vec()).await;
        assert_eq!(dht.traversals(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_answers_are_not_reused() {
        let dht = FakeDht::answering(&[]);
        let coalescer = LookupCoalescer::new(Duration::from_millis(100), 5000);
        assert!(coalescer.lookup(&dht, b"a".to_vec()).await.peers.is_empty());
        // The first worker appears: the very next lookup sees it.
        dht.peers.lock().expect("lock").push(local(1337));
        assert_eq!(coalescer.lookup(&dht, b"a".to_vec()).await.peers.len(), 1);
        assert_eq!(dht.traversals(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn forget_drops_the_reusable_answer() {
        let dht = FakeDht::answering(&[1337]);
        let coalescer = LookupCoalescer::new(Duration::from_secs(10), 5000);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 1);
        coalescer.forget(b"a");
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 2);
    }

    #[tokio::test]
    async fn forget_detaches_a_running_traversal() {
        let dht = Arc::new(FakeDht::gated());
        let coalescer = Arc::new(LookupCoalescer::new(Duration::from_secs(10), 5000));
        let spawn = || {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tokio::spawn(async move { coalescer.lookup(dht.as_ref(), b"a".to_vec()).await })
        };
        let before = spawn();
        settle().await;
        coalescer.forget(b"a");
        // A request after the announce does not join the traversal that started before it.
        let after = spawn();
        settle().await;
        assert_eq!(dht.traversals(), 2);
        dht.release.notify_waiters();
        before.await.expect("before");
        after.await.expect("after");
        // Only the later traversal's answer is kept.
        let again = coalescer.lookup(dht.as_ref(), b"a".to_vec()).await;
        assert_eq!(again.peers[0].port(), 1001 + u16::from(b'a'));
        assert_eq!(dht.traversals(), 2);
    }

    #[test]
    fn reusable_answers_are_capped() {
        const MAX: usize = 100;
        let coalescer = LookupCoalescer::new(Duration::from_secs(3600), MAX);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dht = FakeDht::answering(&[1]);
        runtime.block_on(async {
            for i in 0..MAX + 10 {
                coalescer.lookup(&dht, i.to_string().into_bytes()).await;
            }
        });
        assert_eq!(coalescer.entries().len(), MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cap_of_zero_keeps_no_answer() {
        let dht = FakeDht::answering(&[1337]);
        let coalescer = LookupCoalescer::new(Duration::from_secs(10), 0);
        coalescer.lookup(&dht, b"a".to_vec()).await;
        coalescer.lookup(&dht, b"a".to_vec()).await;
        assert_eq!(dht.traversals(), 2);
        assert!(coalescer.entries().is_empty());
    }

    #[test]
    fn peers_render_distinct_and_capped() {
        let a: SocketAddrV4 = "127.0.0.1:1337".parse().unwrap();
        let b: SocketAddrV4 = "10.0.0.2:80".parse().unwrap();
        assert_eq!(
            render_peers(&[a, b, a]),
            r#"["127.0.0.1:1337","10.0.0.2:80"]"#
        );
        assert_eq!(render_peers(&[]), "[]");
        let many: Vec<SocketAddrV4> = (1..=150)
            .map(|p| SocketAddrV4::new([127, 0, 0, 1].into(), p))
            .collect();
        let rendered: Vec<String> = serde_json::from_str(&render_peers(&many)).unwrap();
        assert_eq!(rendered.len(), MAX_LOOKUP_PEERS);
    }
}
