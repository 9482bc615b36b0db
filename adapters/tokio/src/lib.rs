//! The tokio adapter of Grenache (host servers and clients).
//!
//! [`grape`]: the grape's HTTP API and configuration, above the DHT (which plugs in through
//! [`grape::GrapeDht`]). The DHT task and the RPC peers land with the issues that build on the
//! core.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod grape;
