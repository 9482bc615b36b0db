//! Static memory of the adapter, computed from the consts (nothing else is allocated; stacks
//! of the tasks and the embassy-net stack's own resources come on top).
//!
//! | value | thumbv7em-none-eabihf | x86_64 |
//! |---|---|---|
//! | [`crate::dht::DhtStorage`] ([`DHT_STORAGE`]) | 23 032 B | 23 888 B |
//! | of which the light node ([`LIGHT_NODE`]) | 15 808 B | 16 592 B |
//! | [`crate::worker::Connection`], one slot ([`CONNECTION`]) | 6 264 B | 6 296 B |
//! | [`crate::worker::WorkerStorage`]`<4>` | 25 056 B | 25 184 B |
//!
//! The light node is mostly its two operation slots (about 4.8 KiB each: the core keeps a
//! 1000-byte BEP44 value buffer and a 100-peer list in every slot, which a light client that
//! only announces does not need), the routing table (2.4 KiB) and the core's fixed queue of 32
//! pending pings. A connection slot is its buffers: TCP 1024 + 1024, request 1536, result
//! 512, reply 704, WebSocket message 1024. The embassy-net `StackResources<{N + 2}>` and the
//! task stacks come on top. Both budgets are checked at compile time below.
//!
//! `cargo test -p grenache-embassy memory -- --nocapture` prints the figures of the host.

use core::mem::size_of;

use grenache_core::rng::SplitMix64;

use crate::dht::{DhtStorage, LightNode};
use crate::worker::{Connection, WorkerStorage};

/// Bytes of the DHT task's storage (node, UDP rings, datagram buffers), with an 8-byte RNG.
pub const DHT_STORAGE: usize = size_of::<DhtStorage<SplitMix64>>();
/// Bytes of the light node alone (routing table, store, operations, in-flight queries).
pub const LIGHT_NODE: usize = size_of::<LightNode<SplitMix64>>();
/// Bytes of one worker connection slot (TCP buffers, request, result, reply, WS state).
pub const CONNECTION: usize = size_of::<Connection>();
/// Bytes of the worker storage for `N` slots.
pub const fn worker_storage<const N: usize>() -> usize {
    size_of::<WorkerStorage<N>>()
}

// Budgets checked at compile time on every target: the light client stays under 24 KiB
// and a connection slot under 7 KiB.
const _: () = assert!(DHT_STORAGE < 24 * 1024);
const _: () = assert!(CONNECTION < 7 * 1024);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{dht, worker};

    #[test]
    fn memory_figures() {
        std::println!("LightNode           {LIGHT_NODE} B");
        std::println!("DhtStorage          {DHT_STORAGE} B");
        std::println!("worker::Connection  {CONNECTION} B");
        std::println!("WorkerStorage<4>    {} B", worker_storage::<4>());
        // The buffers are the bulk of a connection; the WS state adds its message buffer.
        let bufs = worker::TCP_RX
            + worker::TCP_TX
            + worker::MAX_REQUEST
            + worker::MAX_RESULT
            + worker::MAX_REPLY
            + worker::MAX_MESSAGE;
        assert!(
            CONNECTION >= bufs && CONNECTION < bufs + 512,
            "{CONNECTION} vs {bufs}"
        );
        assert_eq!(worker_storage::<4>(), 4 * CONNECTION);
        let rings = 2 * dht::UDP_RING + 2 * dht::DATAGRAM_LEN;
        assert!(DHT_STORAGE >= LIGHT_NODE + rings);
    }
}
