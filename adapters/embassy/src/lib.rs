//! The embassy adapter of Grenache: a microcontroller joins the DHT and serves RPC.
//!
//! `#![no_std]`, no allocator. It moves bytes and time between [`embassy_net`] sockets,
//! [`embassy_time`] timers and grenache-core's sans-IO engines; nothing protocol-shaped is
//! decided here.
//!
//! Two entry points, each meant to be awaited by its own embassy task of the board:
//!
//! * [`dht::run_announcer`]: a light DHT client on UDP (the core's announce-only
//!   [`grenache_core::dht::announcer::Announcer`]) that bootstraps from the configured grapes,
//!   finds the closest nodes of each service name with `get_peers`, announces the board's
//!   services to them with `announce_peer` (so grapes store the board's own address) every
//!   [`dht::DEFAULT_INTERVAL`], and answers pings.
//! * [`worker::serve`]: the RPC worker on one TCP port, speaking both Grenache transports:
//!   HTTP (`POST` body `[rid,key,payload]`, as grenache-nodejs-http) and WebSocket (as
//!   grenache-nodejs-ws; a request with `Upgrade: websocket` switches the connection).
//!   `N` connections at once, each with fixed buffers; requests go to a [`worker::Handler`].
//!
//! ```ignore
//! #[embassy_executor::task]
//! async fn dht_task(stack: Stack<'static>, s: &'static mut DhtStorage<MyRng>) -> ! {
//!     let config = AnnounceConfig::new(&GRAPES, &["fibonacci_worker"], 8080);
//!     grenache_embassy::dht::run_announcer(stack, s, &config).await
//! }
//! #[embassy_executor::task]
//! async fn worker_task(stack: Stack<'static>, s: &'static mut WorkerStorage<4>) -> ! {
//!     grenache_embassy::worker::serve(stack, 8080, &mut Fib, s).await
//! }
//! ```
//!
//! Placing the storage without copying it through the stack: [`worker::WorkerStorage::new`] is
//! a `const fn`, so `static_cell::ConstStaticCell::new(WorkerStorage::new())` keeps it in a
//! static and `.take()` hands out the `&'static mut`; its initial image is not all zero bytes
//! (the WebSocket state has enum fields), so it sits in `.data` and costs its size in flash
//! too. A board short of flash builds it at run time instead
//! (`StaticCell::init_with(WorkerStorage::new)`, see `firmware/stm32-f429zi`).
//! [`dht::DhtStorage::new`] needs the RNG, so it is built at run time (`StaticCell::init`),
//! which may pass its 4 KiB through the caller's stack once: give the init task room for it.
//!
//! The worker's buffer sizes are const generics of [`worker::WorkerStorage`] with the
//! module's consts as defaults (`WorkerStorage<N>`); the light client's capacities are the
//! consts of [`dht`].
//!
//! # Memory
//! Everything lives in the two storage values the board places in statics
//! ([`dht::DhtStorage`], [`worker::WorkerStorage`]); their sizes follow from the consts of
//! each module and are listed in [`memory`]. The embassy-net stack needs one socket slot per
//! worker connection plus one for the DHT (`StackResources<{N + 1}>`, more with DHCP/DNS).
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod dht;
pub mod memory;
pub mod worker;

/// Converts embassy time to the core's clock (ms since boot).
pub(crate) fn now() -> grenache_core::Instant {
    grenache_core::Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// Logging through `defmt` or `log` when one of those features is on, else nothing.
macro_rules! trace {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($($arg)*);
        #[cfg(all(feature = "log", not(feature = "defmt")))]
        log::info!($($arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        if false {
            let _ = core::format_args!($($arg)*);
        }
    }};
}
pub(crate) use trace;
