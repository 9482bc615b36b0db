//! The embassy adapter of Grenache (microcontrollers joining the DHT and serving RPC).
//!
//! Not implemented yet: it lands with the embedded issue. This crate exists so that the
//! workspace layout is fixed from the start.
#![no_std]
#![forbid(unsafe_code)]
