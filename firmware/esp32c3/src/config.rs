//! What the board is told at build time: Wi-Fi credentials, grapes and ports.
//!
//! Each value comes from an environment variable of the build (`SSID=... cargo build`),
//! checked by a `const fn`: a missing or malformed value fails the build with a message that
//! names the variable, never the board at run time.

use grenache_core::addr::PeerAddr;
use grenache_embassy::dht::MAX_BOOTSTRAP;

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

/// The grapes to bootstrap from: their DHT (UDP) addresses, `GRAPES=ip:port[,ip:port...]`
/// with IPv4 addresses on the board's network (at most [`MAX_BOOTSTRAP`]; required).
pub static GRAPES: Grapes = Grapes::parse(env!(
    "GRAPES",
    "set GRAPES to the grapes' DHT addresses at build time, e.g. GRAPES=192.168.1.10:20001,192.168.1.10:20002 (see firmware/esp32c3/README.md)"
));

/// The worker's TCP port (`WORKER_PORT`, default 1337 as in the tutorial).
pub const WORKER_PORT: u16 = port(option_env!("WORKER_PORT"), 1337);

/// The DHT node's UDP port (`DHT_PORT`, default grenache-embassy's 20002).
pub const DHT_PORT: u16 = port(
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

/// A port number given at build time; a value that is not a port fails the build.
const fn port(value: Option<&str>, default: u16) -> u16 {
    let Some(text) = value else {
        return default;
    };
    let bytes = text.as_bytes();
    let (port, end) = number(bytes, 0, 65535);
    assert!(
        end == bytes.len() && port > 0,
        "WORKER_PORT and DHT_PORT must be decimal numbers in 1..=65535"
    );
    port as u16
}

/// Parses decimal digits of `bytes` from `start`: the value (at most `max`) and the index
/// after the last digit. Fails the build on no digit or a value over `max`.
const fn number(bytes: &[u8], start: usize, max: u32) -> (u32, usize) {
    let mut i = start;
    let mut value: u32 = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        assert!(value <= max, "number out of range in a build setting");
        i += 1;
    }
    assert!(i > start, "a number was expected in a build setting");
    (value, i)
}

/// The grapes given with `GRAPES`, parsed at compile time.
pub struct Grapes {
    list: [PeerAddr; MAX_BOOTSTRAP],
    len: usize,
}

impl Grapes {
    /// Parses `ip:port[,ip:port...]` (spaces around commas are allowed); fails the build on
    /// anything else, on no grape, or on more than [`MAX_BOOTSTRAP`].
    pub const fn parse(text: &str) -> Grapes {
        let b = text.as_bytes();
        let mut list = [PeerAddr::new([0; 4], 0); MAX_BOOTSTRAP];
        let mut len = 0;
        let mut i = 0;
        loop {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            assert!(
                i < b.len(),
                "GRAPES: expected ip:port, e.g. 192.168.1.10:20001"
            );
            let mut ip = [0u8; 4];
            let mut k = 0;
            while k < 4 {
                if k > 0 {
                    assert!(
                        i < b.len() && b[i] == b'.',
                        "GRAPES: an address is four numbers with dots, e.g. 192.168.1.10"
                    );
                    i += 1;
                }
                let (octet, end) = number(b, i, 255);
                ip[k] = octet as u8;
                i = end;
                k += 1;
            }
            assert!(
                i < b.len() && b[i] == b':',
                "GRAPES: each address needs its DHT port, e.g. 192.168.1.10:20001"
            );
            let (port, end) = number(b, i + 1, 65535);
            assert!(port > 0, "GRAPES: a port is 1..=65535");
            i = end;
            assert!(len < MAX_BOOTSTRAP, "GRAPES: too many grapes (at most 8)");
            list[len] = PeerAddr::new(ip, port as u16);
            len += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i == b.len() {
                break;
            }
            assert!(
                b[i] == b',',
                "GRAPES: separate the grapes with commas, e.g. 192.168.1.10:20001,192.168.1.11:20001"
            );
            i += 1;
        }
        Grapes { list, len }
    }

    /// The grapes, in the order given.
    pub fn as_slice(&self) -> &[PeerAddr] {
        self.list.get(..self.len).unwrap_or(&[])
    }
}

// Compile-time checks of the parsers (this crate has no test target: it only builds for the
// board).
const _: () = {
    let g = Grapes::parse("192.168.1.10:20001, 10.0.0.1:1");
    assert!(g.len == 2);
    assert!(g.list[0].ip[0] == 192 && g.list[0].ip[3] == 10 && g.list[0].port == 20001);
    assert!(g.list[1].ip[0] == 10 && g.list[1].port == 1);
    assert!(port(Some("65535"), 1) == 65535);
    assert!(port(None, 1337) == 1337);
};
