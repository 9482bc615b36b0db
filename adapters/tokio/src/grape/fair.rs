//! Fair shares of the API's connection slots: when every slot is taken, a newcomer from a
//! client with fewer connections displaces an idle connection of the client with the most.
//!
//! The per-client cap ([`ApiConfig::max_connections_per_ip`]) keeps one host from taking every
//! slot, but a few hosts together still can (four hosts at 256 idle connections each fill
//! 1024). So when the API is full, [`Connections::displace_for`] asks one idle connection
//! (waiting for a request head, not serving one) of the heaviest client to close and hand its
//! slot to the newcomer, provided that client has at least two connections more than the
//! newcomer's: after the move the heaviest still has at least as many as the newcomer, so two
//! clients never take turns displacing each other. The slot is handed over directly, so that
//! connections waiting for a slot cannot take it first. Clients are counted by
//! [`crate::limits::client_key`]: an IPv6 client by its /64 (one host commonly owns a whole /64).
//!
//! [`ApiConfig::max_connections_per_ip`]: super::ApiConfig::max_connections_per_ip

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::task::AtomicWaker;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// One open connection, as the displacement rule sees it.
pub(super) struct Slot {
    /// The client's [`crate::limits::client_key`].
    key: IpAddr,
    /// Waiting for a request head (nothing being served): may be displaced.
    idle: AtomicBool,
    /// Asks the connection to close (if it is busy, it closes when it next waits for a head).
    /// A flag and a waker rather than a `Notify`: the connection polls it on every request,
    /// and registering with a `Notify` takes its lock each time.
    evicted: AtomicBool,
    /// Wakes the connection waiting for a head when [`Slot::evicted`] is set.
    evict_waker: AtomicWaker,
    /// Where the connection's slot goes when it closes after being displaced.
    handoff: Mutex<Handoff>,
}

/// The hand-over of a slot, decided under one lock so that a connection that is already
/// closing is never chosen.
enum Handoff {
    /// Serving (or idle): nobody asked for the slot.
    Open,
    /// Displaced: the slot goes to this newcomer.
    Asked(oneshot::Sender<OwnedSemaphorePermit>),
    /// The connection has ended and given its slot away.
    Released,
}

impl Slot {
    /// Marks the connection as waiting for a head (`true`) or serving a request.
    pub(super) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Release);
    }

    /// Resolves when the connection was chosen to make room for a lighter client.
    pub(super) fn displaced(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.evicted.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            self.evict_waker.register(cx.waker());
            // Set between the check and the registration: seen here, or the wake-up comes.
            if self.evicted.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// Gives the connection's slot permit to the client that displaced it, if any (when the
    /// connection has ended); otherwise the permit is simply dropped, freeing the slot.
    pub(super) fn release(&self, permit: OwnedSemaphorePermit) {
        let handoff = std::mem::replace(&mut *self.handoff(), Handoff::Released);
        if let Handoff::Asked(newcomer) = handoff {
            // A newcomer that gave up hands the permit back here: it is dropped, freeing
            // the slot.
            let _ = newcomer.send(permit);
        }
    }

    /// The hand-over state; a poisoned lock only means a panic elsewhere while it was held,
    /// and every change is a single assignment, so keep using it.
    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The open connections of the API. See the module documentation.
#[derive(Default)]
pub(super) struct Connections {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: Mutex<u64>,
}

/// A connection's place in [`Connections`], given up when dropped.
pub(super) struct Registration {
    connections: Arc<Connections>,
    id: u64,
    slot: Arc<Slot>,
}

impl Registration {
    /// The connection's slot.
    pub(super) fn slot(&self) -> &Slot {
        &self.slot
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.slots().remove(&self.id);
    }
}

impl Connections {
    /// The table; a poisoned lock only means a panic elsewhere while it was held, and every
    /// change is a single insert or remove, so keep using it.
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection of the client `key` (a [`crate::limits::client_key`]).
    pub(super) fn register(self: &Arc<Self>, key: IpAddr) -> Registration {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next = next.wrapping_add(1);
            *next
        };
        let slot = Arc::new(Slot {
            key,
            idle: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            evict_waker: AtomicWaker::new(),
            handoff: Mutex::new(Handoff::Open),
        });
        self.slots().insert(id, Arc::clone(&slot));
        Registration {
            connections: Arc::clone(self),
            id,
            slot,
        }
    }

    /// With every slot taken and a newcomer from `newcomer` (a [`crate::limits::client_key`])
    /// waiting: asks an idle connection of the client with the most connections to close, if that
    /// client has at least two more than the newcomer. When one was asked, its slot permit arrives
    /// on the returned channel. Walks every open connection: it only runs when the API is full.
    pub(super) fn displace_for(
        &self,
        newcomer: IpAddr,
    ) -> Option<oneshot::Receiver<OwnedSemaphorePermit>> {
        let slots = self.slots();
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for slot in slots.values() {
            *counts.entry(slot.key).or_insert(0) += 1;
        }
        let mine = counts.get(&newcomer).copied().unwrap_or(0);
        // The heaviest client that has an idle connection to give.
        let victim = slots
            .values()
            .filter(|slot| slot.idle.load(Ordering::Acquire))
            .filter(|slot| counts.get(&slot.key).copied().unwrap_or(0) >= mine + 2)
            .max_by_key(|slot| counts.get(&slot.key).copied().unwrap_or(0));
        let slot = victim?;
        let mut handoff = slot.handoff();
        // Ended between its last head wait and now: its slot is free already, or about to be.
        if !matches!(*handoff, Handoff::Open) {
            return None;
        }
        // Not chosen twice while it closes.
        slot.set_idle(false);
        let (sender, receiver) = oneshot::channel();
        *handoff = Handoff::Asked(sender);
        slot.evicted.store(true, Ordering::Release);
        slot.evict_waker.wake();
        Some(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn the_heaviest_clients_idle_connection_makes_room_for_a_lighter_one() {
        let connections = Arc::new(Connections::default());
        let (heavy, light) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let heavies: Vec<_> = (0..3).map(|_| connections.register(heavy)).collect();
        let busy = heavies.first().map(Registration::slot);
        for registration in &heavies {
            registration.slot().set_idle(false);
        }
        // Nothing idle: nobody is displaced.
        assert!(connections.displace_for(light).is_none());
        if let Some(slot) = busy {
            slot.set_idle(true);
        }
        let lights: Vec<_> = (0..2).map(|_| connections.register(light)).collect();
        // 3 against 2: moving one would only swap the roles.
        assert!(connections.displace_for(light).is_none());
        drop(lights);
        assert!(connections.displace_for(light).is_some());
        // The chosen one is no longer idle: not chosen again.
        assert!(connections.displace_for(light).is_none());
        // A client never displaces itself.
        if let Some(slot) = busy {
            slot.set_idle(true);
        }
        assert!(connections.displace_for(heavy).is_none());
        drop(heavies);
        assert!(connections.slots().is_empty());
    }

    #[tokio::test]
    async fn a_displaced_connection_is_told_and_hands_its_slot_over() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = Arc::clone(&permits).try_acquire_owned();
        let connections = Arc::new(Connections::default());
        let victim = connections.register(ip("127.0.0.2"));
        let _other = connections.register(ip("127.0.0.2"));
        let receiver = connections.displace_for(ip("127.0.0.3"));
        // Only the chosen one is told (a stored notification: at once).
        let chosen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::select! {
                () = victim.slot().displaced() => Some(&victim),
                () = _other.slot().displaced() => Some(&_other),
            }
        })
        .await
        .ok()
        .flatten();
        if let (Some(chosen), Ok(permit)) = (chosen, permit) {
            chosen.slot().release(permit);
        }
        let handed = match receiver {
            Some(receiver) => receiver.await.ok(),
            None => None,
        };
        assert!(handed.is_some(), "the newcomer got the slot");
        // Handed over, not freed: nobody else could take it meanwhile.
        assert_eq!(permits.available_permits(), 0);
    }
}
