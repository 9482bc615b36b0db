//! What the board is told at build time: Wi-Fi credentials, grapes and ports.
//!
//! Each value comes from an environment variable of the build (`SSID=... cargo build`),
//! checked by a `const fn` (the Wi-Fi ones here, grapes and ports by grenache-embassy's
//! `config`): a missing or malformed value fails the build with a message that names the
//! variable (or, for a port, a note naming the constant), never the board at run time.

use grenache_core::addr::PeerAddr;
use grenache_embassy::config;

/// The Wi-Fi network to join (`SSID`, 1 to 32 bytes; required).
pub const SSID: &str = ssid(env!(
    "SSID",
    "set SSID to the Wi-Fi network's name at build time, e.g. SSID=mynet PASSWORD=secret GRAPES=192.168.1.10:20001 cargo build --release (see firmware/esp32c3/README.md)"
));

/// Its WPA2 passphrase (`PASSWORD`, 8 to 64 bytes; empty for an open network; required).
pub const PASSWORD: &str = password(env!(
    "PASSWORD",
    "set PASSWORD to the Wi-Fi passphrase at build time (PASSWORD= for an open network; see firmware/esp32c3/README.md)"
));

const GRAPES_TEXT: &str = env!(
    "GRAPES",
    "set GRAPES to the grapes' DHT addresses at build time, e.g. GRAPES=192.168.1.10:20001,192.168.1.10:20002 (see firmware/esp32c3/README.md)"
);

/// The grapes to bootstrap from: their DHT (UDP) addresses, `GRAPES=ip:port[,ip:port...]`
/// with IPv4 addresses on the board's network (at most
/// [`grenache_embassy::dht::MAX_BOOTSTRAP`]; required).
pub static GRAPES: [PeerAddr; config::grape_count(GRAPES_TEXT)] = config::grapes(GRAPES_TEXT);

/// The worker's TCP port (`WORKER_PORT`, default 1337 as in the tutorial).
pub const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);

/// The DHT node's UDP port (`DHT_PORT`, default grenache-embassy's 20002).
pub const DHT_PORT: u16 = config::port_or(
    option_env!("DHT_PORT"),
    grenache_embassy::dht::DEFAULT_DHT_PORT,
);

const fn ssid(text: &str) -> &str {
    assert!(
        !text.is_empty() && text.len() <= 32,
        "SSID must be 1 to 32 bytes"
    );
    text
}

const fn password(text: &str) -> &str {
    // WPA2-Personal takes a passphrase of 8 to 63 characters or 64 hex digits.
    assert!(
        text.is_empty() || (text.len() >= 8 && text.len() <= 64),
        "PASSWORD must be empty (open network) or 8 to 64 bytes (WPA2)"
    );
    text
}
