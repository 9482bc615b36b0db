//! Build-time settings, parsed by grenache-embassy's `config` `const fn`s: a malformed value
//! stops the build with a message that says what is wrong (`evaluation panicked: GRAPES: a
//! grape is written a.b.c.d:port ...`), so a board is never flashed with an address it cannot
//! use.
//!
//! * `GRAPES`: the grapes' DHT addresses (their `--dp` port), `a.b.c.d:port` separated by
//!   commas (spaces around them allowed), at most [`grenache_embassy::dht::MAX_BOOTSTRAP`];
//!   required: without it the build stops (`set GRAPES to the grapes' DHT addresses ...`)
//!   rather than bake in an address of someone else's network.
//! * `WORKER_PORT`: the worker's TCP port; default 1337, as in the tutorial.

use grenache_core::addr::PeerAddr;
use grenache_embassy::config;

const GRAPES_TEXT: &str = env!(
    "GRAPES",
    "set GRAPES to the grapes' DHT addresses at build time, e.g. GRAPES=192.168.1.10:20001,192.168.1.10:20002 cargo run --release (see firmware/stm32-f429zi/README.md)"
);

/// The worker's TCP port (`WORKER_PORT` at build time).
pub const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);

/// The grapes to bootstrap from (`GRAPES` at build time).
pub static GRAPES: [PeerAddr; config::grape_count(GRAPES_TEXT)] = config::grapes(GRAPES_TEXT);
