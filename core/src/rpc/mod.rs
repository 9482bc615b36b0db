//! Grenache RPC roles, sans-IO: the engines that decide what a peer answers, built on the
//! [`wire`](crate::wire) formats.
//!
//! - [`worker`]: one worker (server) connection: Grenache's HTTP and WebSocket transports on
//!   one TCP port, as `grenache-nodejs-http` and `grenache-nodejs-ws` serve them.

pub mod worker;

pub use worker::{Action, Buffers, Handler, Request, WorkerConnection};
