//! Build-time settings, parsed by grenache-embassy's `config` `const fn`s: a malformed value
//! stops the build with a message that says what is wrong (`evaluation panicked: GRAPES: a
//! grape is written a.b.c.d:port ...`), so a board is never flashed with an address it cannot
//! use.
//!
//! * `GRAPES`: the grapes' DHT addresses (their `--dp` port), `a.b.c.d:port` separated by
//!   commas (spaces around them allowed), at most [`grenache_embassy::dht::MAX_BOOTSTRAP`];
//!   default [`DEFAULT_GRAPES`], the tutorial's two grapes on one PC.
//! * `WORKER_PORT`: the worker's TCP port; default 1337, as in the tutorial.

use grenache_core::addr::PeerAddr;
use grenache_embassy::config;

/// The tutorial's grapes (`--dp 20001` and `--dp 20002`) on a PC at 192.168.1.10.
pub const DEFAULT_GRAPES: &str = "192.168.1.10:20001,192.168.1.10:20002";

const GRAPES_TEXT: &str = match option_env!("GRAPES") {
    Some(text) => text,
    None => DEFAULT_GRAPES,
};

/// The worker's TCP port (`WORKER_PORT` at build time).
pub const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);

/// The grapes to bootstrap from (`GRAPES` at build time).
pub static GRAPES: [PeerAddr; config::grape_count(GRAPES_TEXT)] = config::grapes(GRAPES_TEXT);
