//! Build-time settings, parsed by `const fn`s: a malformed value stops the build with a
//! message that says what is wrong (`evaluation of constant value failed ... a grape is
//! written a.b.c.d:port`), so a board is never flashed with an address it cannot use.
//!
//! * `GRAPES`: the grapes' DHT addresses (their `--dp` port), comma separated, at most
//!   [`grenache_embassy::dht::MAX_BOOTSTRAP`]; default [`DEFAULT_GRAPES`], the tutorial's two
//!   grapes on one PC.
//! * `WORKER_PORT`: the worker's TCP port; default 1337, as in the tutorial.

use grenache_core::addr::PeerAddr;

/// The tutorial's grapes (`--dp 20001` and `--dp 20002`) on a PC at 192.168.1.10.
pub const DEFAULT_GRAPES: &str = "192.168.1.10:20001,192.168.1.10:20002";

const GRAPES_TEXT: &str = match option_env!("GRAPES") {
    Some(text) => text,
    None => DEFAULT_GRAPES,
};

/// The worker's TCP port (`WORKER_PORT` at build time).
pub const WORKER_PORT: u16 = match option_env!("WORKER_PORT") {
    Some(text) => parse_port(text.as_bytes()),
    None => 1337,
};

/// The grapes to bootstrap from (`GRAPES` at build time).
pub static GRAPES: [PeerAddr; grape_count(GRAPES_TEXT)] = grapes(GRAPES_TEXT);

/// How many comma-separated addresses `text` holds.
const fn grape_count(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut n = 1;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    assert!(
        n <= grenache_embassy::dht::MAX_BOOTSTRAP,
        "GRAPES: at most 8 grapes"
    );
    n
}

/// Parses `a.b.c.d:port,a.b.c.d:port,...` (no spaces) into `N` addresses.
pub const fn grapes<const N: usize>(text: &str) -> [PeerAddr; N] {
    let bytes = text.as_bytes();
    let mut out = [PeerAddr::new([0; 4], 0); N];
    let mut start = 0;
    let mut n = 0;
    while n < N {
        let mut end = start;
        while end < bytes.len() && bytes[end] != b',' {
            end += 1;
        }
        out[n] = parse_grape(bytes, start, end);
        start = end + 1;
        n += 1;
    }
    out
}

/// One `a.b.c.d:port` in `bytes[start..end]`.
const fn parse_grape(bytes: &[u8], start: usize, end: usize) -> PeerAddr {
    let mut ip = [0u8; 4];
    let mut part = 0;
    let mut i = start;
    while part < 4 {
        let mut value: u32 = 0;
        let mut digits = 0;
        while i < end && bytes[i].is_ascii_digit() {
            value = value * 10 + (bytes[i] - b'0') as u32;
            digits += 1;
            assert!(digits <= 3, "GRAPES: an IPv4 part has 1 to 3 digits");
            i += 1;
        }
        assert!(
            digits > 0 && value <= 255,
            "GRAPES: a grape is written a.b.c.d:port (parts 0 to 255)"
        );
        ip[part] = value as u8;
        let sep = if part < 3 { b'.' } else { b':' };
        assert!(
            i < end && bytes[i] == sep,
            "GRAPES: a grape is written a.b.c.d:port"
        );
        i += 1;
        part += 1;
    }
    let mut port = [0u8; 5];
    let len = end - i;
    assert!(len > 0 && len <= 5, "GRAPES: a port is 1 to 5 digits");
    let mut k = 0;
    while k < len {
        port[k] = bytes[i + k];
        k += 1;
    }
    PeerAddr::new(ip, parse_port(port.split_at(len).0))
}

/// A decimal port number in 1..=65535.
const fn parse_port(bytes: &[u8]) -> u16 {
    assert!(
        !bytes.is_empty() && bytes.len() <= 5,
        "a port is 1 to 5 digits"
    );
    let mut port: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "a port is decimal digits");
        port = port * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    assert!(port > 0 && port <= 65535, "a port is 1..=65535");
    port as u16
}
