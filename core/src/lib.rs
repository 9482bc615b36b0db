//! The sans-IO core of Grenache.
//!
//! `#![no_std]`, no allocator, no sockets, no clock reads. Every protocol engine in this crate
//! is a value the caller feeds with bytes and the current [`Instant`]; it answers with bytes to
//! send and the next deadline. Every capacity is a const generic or a documented fixed bound,
//! and every decoder is bounded and total: any input yields a value or an error, never a panic.
//!
//! The same code runs on a Linux grape (through `grenache-tokio`) and on a microcontroller
//! (through `grenache-embassy`).
#![no_std]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(test)]
extern crate std;

pub mod addr;
pub mod dht;
pub mod rng;
pub mod rpc;
pub mod time;
pub mod wire;

pub use rng::Rng;
pub use time::{Duration, Instant};
