//! The tokio adapter of Grenache (host servers and clients).
//!
//! Not implemented yet: the grape and the RPC peers land with the issues that build on the
//! core. This crate exists so that the workspace layout is fixed from the start.
#![forbid(unsafe_code)]
