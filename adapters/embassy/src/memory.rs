//! Static memory of the adapter, computed from the consts (nothing else is allocated; stacks
//! of the tasks and the embassy-net stack's own resources come on top).
//!
//! | value | thumbv7em-none-eabihf | x86_64 |
//! |---|---|---|
//! | [`crate::dht::DhtStorage`] ([`DHT_STORAGE`]) | 3 624 B (`firmware/stm32-f429zi`'s, with its RNG handle) | 3 688 B |
//! | of which the light client ([`LIGHT_CLIENT`]) | | 672 B |
//! | [`crate::worker::Connection`], one slot ([`CONNECTION`]), default sizes | 6 312 B | 6 344 B |
//! | [`crate::worker::WorkerStorage`]`<4>`, default sizes | 25 248 B | 25 376 B |
//! | `WorkerStorage<2, 384, 384, 640, 512, 64, 256>` (`firmware/stm32-f429zi`) | 5 360 B | |
//!
//! The light client ([`grenache_core::dht::announcer::Announcer`]) is its 8 traversal candidates
//! (id, address, state, deadline and write token: 64 bytes each) and the service name being
//! announced (up to 128 bytes); it has no routing table, store or BEP44 buffers. The rest of
//! the DHT storage is the UDP receive ring (1536), send ring (960) and the outgoing datagram
//! (320). A connection slot is its buffers: by default TCP 1024 + 1024, request 1536, result
//! 512, reply 752 (the reply frame behind [`crate::worker::HEAD_ROOM`]), WebSocket message
//! 1024; all are const generics of [`crate::worker::WorkerStorage`]. The embassy-net
//! `StackResources<{N + 2}>` and the task futures come on top. Both budgets are checked at
//! compile time below.
//!
//! `cargo test -p grenache-embassy memory -- --nocapture` prints the figures of the host.

use core::mem::size_of;

use grenache_core::rng::SplitMix64;

use crate::dht::{DhtStorage, LightClient};
use crate::worker::{Connection, WorkerStorage};

/// Bytes of the DHT task's storage (node, UDP rings, datagram buffers), with an 8-byte RNG.
pub const DHT_STORAGE: usize = size_of::<DhtStorage<SplitMix64>>();
/// Bytes of the announce client alone (its traversal candidates and the service name).
pub const LIGHT_CLIENT: usize = size_of::<LightClient>();
/// Bytes of one worker connection slot with the default sizes (TCP buffers, request, result,
/// reply, WS state).
pub const CONNECTION: usize = size_of::<Connection>();
/// Bytes of the worker storage for `N` slots with the default sizes.
pub const fn worker_storage<const N: usize>() -> usize {
    size_of::<WorkerStorage<N>>()
}

// Budgets checked at compile time on every target: the light client's storage stays under
// 4 KiB (it shares a 24 KiB board budget with the HAL, the network stack and the worker) and a
// connection slot with the default sizes under 7 KiB.
const _: () = assert!(DHT_STORAGE < 4 * 1024);
const _: () = assert!(CONNECTION < 7 * 1024);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{dht, worker};

    #[test]
    fn memory_figures() {
        std::println!("LightClient         {LIGHT_CLIENT} B");
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
        let rings = dht::UDP_RX_RING + dht::UDP_TX_RING + dht::DATAGRAM_LEN;
        assert!(DHT_STORAGE >= LIGHT_CLIENT + rings);
    }
}
