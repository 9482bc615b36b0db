//! Coalescing of concurrent `/lookup`s of the same name: one DHT traversal answers them all.
//!
//! A busy grape gets the same lookup from many clients at once (every Link looks its services
//! up on each request once its 10 s cache expires). Without coalescing, each request hops to
//! the DHT task and starts its own `get_peers` traversal; with it, the first request of a name
//! (the *leader*) runs the traversal and every request of the same name that arrives while it
//! runs (a *follower*) waits for the leader's answer. The entry is removed as soon as the
//! answer is out, so a request that arrives after a traversal ended starts a new one: no answer
//! is ever older than the traversal that was running when its request arrived. (The Node grape
//! goes the other way and adds peers from its `_mem` cache, up to 80 s old, to every answer.)
//!
//! A leader whose HTTP connection goes away is cancelled with its request; its followers then
//! see the channel close and try again (one of them becomes the new leader), at most
//! [`MAX_ATTEMPTS`] times before they run a traversal of their own.
//!
//! Memory: one entry per name being looked up right now, so at most one per open connection
//! (the API caps those at [`crate::grape::ApiConfig::max_connections`]).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::dht::GrapeDht;

/// How many leaders a follower waits for before it runs the traversal itself. Only a leader
/// that was cancelled (its client hung up) makes a follower try again.
const MAX_ATTEMPTS: usize = 3;

/// The answer of one traversal, shared by all the requests that waited for it.
type Answer = Arc<Vec<SocketAddrV4>>;

/// The lookups running now, by name. See the module documentation.
#[derive(Default)]
pub(crate) struct LookupCoalescer {
    running: Mutex<HashMap<Vec<u8>, watch::Receiver<Option<Answer>>>>,
}

/// Either this request runs the traversal, or it waits for the one that does.
enum Role {
    Leader(watch::Sender<Option<Answer>>),
    Follower(watch::Receiver<Option<Answer>>),
}

impl LookupCoalescer {
    /// The peers announced under `name`: the answer of a traversal started for this request, or
    /// of the one of the same name that was running when it arrived.
    pub(crate) async fn lookup<D: GrapeDht>(&self, dht: &D, name: Vec<u8>) -> Answer {
        for _ in 0..MAX_ATTEMPTS {
            match self.role(&name) {
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
        Arc::new(dht.lookup(name).await)
    }

    /// Joins the running lookup of `name`, or registers a new one led by the caller.
    fn role(&self, name: &[u8]) -> Role {
        // A poisoned lock only means a panic elsewhere while it was held; the map itself is
        // always consistent (single inserts and removes), so keep using it.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = running.get(name) {
            // A receiver whose sender is gone belongs to a cancelled leader: replace it.
            if receiver.has_changed().is_ok() {
                return Role::Follower(receiver.clone());
            }
        }
        let (sender, receiver) = watch::channel(None);
        running.insert(name.to_vec(), receiver);
        Role::Leader(sender)
    }

    /// Runs the traversal, hands the answer to the followers and unregisters it.
    async fn lead<D: GrapeDht>(
        &self,
        dht: &D,
        name: Vec<u8>,
        sender: watch::Sender<Option<Answer>>,
    ) -> Answer {
        // Unregisters the lookup when the leader finishes or is cancelled (dropped mid-way).
        let _registration = Registration {
            coalescer: self,
            name: name.clone(),
            sender: &sender,
        };
        let answer = Arc::new(dht.lookup(name).await);
        sender.send_replace(Some(Arc::clone(&answer)));
        answer
    }
}

/// Removes a leader's entry from the map when dropped, unless another leader replaced it.
struct Registration<'a> {
    coalescer: &'a LookupCoalescer,
    name: Vec<u8>,
    sender: &'a watch::Sender<Option<Answer>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut running = self
            .coalescer
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if running
            .get(&self.name)
            .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
        {
            running.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grape::dht::{DhtError, GetQuery, GotItem, PutItem};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A DHT whose lookups block until released, and that counts traversals.
    #[derive(Default)]
    struct GatedDht {
        traversals: AtomicUsize,
        release: Notify,
    }

    impl GrapeDht for GatedDht {
        async fn lookup(&self, name: Vec<u8>) -> Vec<SocketAddrV4> {
            let n = self.traversals.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
            let port = u16::try_from(n).unwrap_or(0) + 1000 + u16::from(name[0]);
            vec![SocketAddrV4::new([127, 0, 0, 1].into(), port)]
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
    }

    /// Lets the spawned lookups reach their await points.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_traversal() {
        let dht = Arc::new(GatedDht::default());
        let coalescer = Arc::new(LookupCoalescer::default());
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tasks.push(tokio::spawn(async move {
                coalescer.lookup(dht.as_ref(), b"a".to_vec()).await
            }));
        }
        settle().await;
        assert_eq!(dht.traversals.load(Ordering::SeqCst), 1);
        dht.release.notify_waiters();
        for task in tasks {
            let answer = task.await.expect("task");
            assert_eq!(answer[0].port(), 1000 + u16::from(b'a'));
        }
        assert!(coalescer.running.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn different_names_and_later_requests_start_their_own_traversal() {
        let dht = Arc::new(GatedDht::default());
        let coalescer = Arc::new(LookupCoalescer::default());
        let spawn = |name: &'static [u8]| {
            let (dht, coalescer) = (Arc::clone(&dht), Arc::clone(&coalescer));
            tokio::spawn(async move { coalescer.lookup(dht.as_ref(), name.to_vec()).await })
        };
        let (a, b) = (spawn(b"a"), spawn(b"b"));
        settle().await;
        assert_eq!(dht.traversals.load(Ordering::SeqCst), 2);
        dht.release.notify_waiters();
        a.await.expect("a");
        b.await.expect("b");
        // The first traversal is over: a new request does not get its answer.
        let again = spawn(b"a");
        settle().await;
        assert_eq!(dht.traversals.load(Ordering::SeqCst), 3);
        dht.release.notify_waiters();
        assert_eq!(again.await.expect("again")[0].port(), 1002 + u16::from(b'a'));
    }

    #[tokio::test]
    async fn followers_of_a_cancelled_leader_get_an_answer() {
        let dht = Arc::new(GatedDht::default());
        let coalescer = Arc::new(LookupCoalescer::default());
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
        assert_eq!(dht.traversals.load(Ordering::SeqCst), 1);
        // The leader's client hangs up: the follower leads a new traversal.
        leader.abort();
        settle().await;
        assert_eq!(dht.traversals.load(Ordering::SeqCst), 2);
        dht.release.notify_waiters();
        let answer = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follower answered")
            .expect("task");
        assert_eq!(answer[0].port(), 1001 + u16::from(b'a'));
        assert!(coalescer.running.lock().expect("lock").is_empty());
    }
}
