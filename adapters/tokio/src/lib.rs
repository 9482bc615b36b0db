//! The tokio adapter of Grenache: host-side peers that talk to grapes and to other services.
//!
//! * [`grape`]: the grape: its HTTP API and configuration over its DHT node on a UDP socket
//!   ([`grape::node`], driving `grenache_core::dht::node::Node`).
//! * [`link`]: the client of a grape's HTTP API (`lookup`, `announce`, `put`, `get`), with the
//!   lookup cache, request coalescing and retries of `grenache-nodejs-link`.
//! * [`rpc::ws`] and [`rpc::http`]: RPC workers (`PeerRpcServer`) and clients
//!   (`PeerRpcClient`) that speak the frames of `grenache-nodejs-ws` and `grenache-nodejs-http`
//!   byte for byte, so Rust and Node services can call each other.
//! * [`rpc::stream`]: raw byte streams over the HTTP transport (Node's `peer.stream` and
//!   `'stream'` event), with backpressure both ways.
//! * [`pubsub`]: publishers (`PeerPub`) and subscribers (`PeerSub`) over WebSocket, as
//!   `grenache-nodejs-ws`, with subscribers that reconnect.
//! * [`limits`]: what every server here shares against hostile hosts: connection caps per
//!   client IP, client allow-lists, one memory budget across connections, minimum progress.
//! * [`loops`]: the event loops the grape API and the RPC workers serve connections on, one
//!   current-thread runtime per thread, none stealing work from another.
//! * [`testnet`]: a network of real grapes on loopback for the tests of your own workers.
//! * [`tls`]: mutual TLS for both RPC transports (`wss://`, `https://`), with Node-formatted
//!   certificate fingerprints and a `verify_client` hook.
//!
//! Everything here needs a tokio runtime (multi-thread or current-thread) with time and IO
//! enabled.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod grape;
mod http_client;
mod http_server;
mod js;
pub mod limits;
pub mod link;
pub mod loops;
mod os_rng;
pub mod pubsub;
pub mod rpc;
pub mod testnet;
pub mod tls;

pub use link::{Link, LinkConfig, LinkError};
pub use os_rng::OsRng;
pub use rpc::{Handler, Request, RpcError};

// docs/FROM_NODE.md, the guide for users of the Node packages: its Rust blocks are doctests,
// so `cargo test --doc` keeps every name and signature in it true.
#[doc = include_str!("../../../docs/FROM_NODE.md")]
#[cfg(doctest)]
pub struct FromNodeGuide;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: every critical section in this crate leaves its data
/// consistent before anything that could panic, so a poisoned lock still guards valid data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh random (version 4) UUID in its hyphenated lowercase form, as `uuid.v4()` gives in
/// Node: used for every request id (`rid`).
pub(crate) fn new_rid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// [`new_rid`] as a shared string, made with one allocation (a WebSocket request keeps its rid
/// in two places).
pub(crate) fn new_shared_rid() -> std::sync::Arc<str> {
    let mut text = uuid::Uuid::encode_buffer();
    std::sync::Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_are_uuid_v4() {
        let rid = new_rid();
        assert_eq!(rid.len(), 36);
        assert_eq!(rid.as_bytes().get(14), Some(&b'4'));
        assert_ne!(rid, new_rid());
        let shared = new_shared_rid();
        assert_eq!(shared.len(), 36);
        assert_eq!(shared.as_bytes().get(14), Some(&b'4'));
        assert!(shared
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
