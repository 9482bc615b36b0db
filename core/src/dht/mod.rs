//! The Kademlia DHT as the BitTorrent mainline protocol (BEP 5, BEP 44) runs it: node ids and
//! the routing table, the iterative lookup, the announce and item stores with their tokens, and
//! the [`node::Node`] that ties them to KRPC datagrams; the board's [`announcer`] is the small
//! client-only variant for microcontrollers.

pub mod announcer;
pub mod bep44;
pub mod id;
pub mod lookup;
pub mod node;
pub mod ratelimit;
pub mod store;
pub mod table;
pub mod token;
