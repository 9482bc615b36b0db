//! Parsers for a board's build-time settings: ports and the grapes to bootstrap from.
//!
//! A board takes its settings from environment variables of the build (`option_env!` or
//! `env!`) and parses them here with `const fn`s into `const`s and `static`s. The parsing
//! happens while the board crate compiles, so it costs no flash, and a malformed value stops
//! the build (`evaluation panicked: GRAPES: a grape is written a.b.c.d:port ...`, with a note
//! naming the board's constant) instead of flashing a board with an address it cannot use.
//! Called at run time (as the unit tests do) the same values panic with the same messages.
//!
//! ```
//! use grenache_core::addr::PeerAddr;
//! use grenache_embassy::config;
//!
//! const GRAPES_TEXT: &str = match option_env!("GRAPES") {
//!     Some(text) => text,
//!     None => "192.168.1.10:20001,192.168.1.10:20002",
//! };
//! /// The grapes to bootstrap from (`GRAPES` at build time).
//! static GRAPES: [PeerAddr; config::grape_count(GRAPES_TEXT)] = config::grapes(GRAPES_TEXT);
//! /// The worker's TCP port (`WORKER_PORT` at build time, default 1337).
//! const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);
//! # assert!(!GRAPES.is_empty() && WORKER_PORT > 0);
//! ```
//!
//! The formats:
//!
//! * a port: 1 to 5 decimal digits, a value in 1..=65535 ([`port`], [`port_or`]);
//! * grapes: `a.b.c.d:port` (IPv4 parts of 1 to 3 digits, 0 to 255; the port as above),
//!   separated by commas, with optional spaces around each grape; 1 to
//!   [`MAX_BOOTSTRAP`] of them ([`grape_count`], [`grapes`]).
//!
//! A value that breaks its format does not build:
//!
//! ```compile_fail
//! static WORKER_PORT: u16 = grenache_embassy::config::port("70000");
//! ```

use crate::dht::MAX_BOOTSTRAP;
use grenache_core::addr::PeerAddr;

// The "at most 8 grapes" messages below spell the bound out (a const panic message is a
// literal): this fails the build of the adapter when the bound changes without them.
const _: () = assert!(
    MAX_BOOTSTRAP == 8,
    "update the GRAPES messages of config.rs"
);

/// A port given as an optional build-time value: `default` when unset (`None`, as from
/// `option_env!`), else `value` parsed by [`port`].
///
/// Panics (a build error in a const context) as [`port`] does.
pub const fn port_or(value: Option<&str>, default: u16) -> u16 {
    match value {
        Some(text) => port(text),
        None => default,
    }
}

/// A decimal port number: 1 to 5 ASCII digits, a value in 1..=65535 (no sign, no spaces).
///
/// Panics (a build error in a const context) with `a port is decimal digits`,
/// `a port is 1 to 5 digits` or `a port is 1..=65535`.
pub const fn port(text: &str) -> u16 {
    let bytes = text.as_bytes();
    let (value, count) = digits(bytes, 0);
    assert!(count == bytes.len(), "a port is decimal digits");
    assert!(count > 0 && count <= 5, "a port is 1 to 5 digits");
    assert!(value > 0 && value <= 65535, "a port is 1..=65535");
    value as u16
}

/// How many grapes the `GRAPES` text holds: the length of the array [`grapes`] fills.
///
/// Counts the commas only; [`grapes`] checks each grape. Panics (a build error in a const
/// context) with `GRAPES: at most 8 grapes` beyond [`MAX_BOOTSTRAP`].
pub const fn grape_count(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut n = 1;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    assert!(n <= MAX_BOOTSTRAP, "GRAPES: at most 8 grapes");
    n
}

/// Parses `a.b.c.d:port[,a.b.c.d:port...]` into its `N` grapes, in the order given; `N` must
/// be [`grape_count`] of the same text.
///
/// Spaces around a grape are allowed, nothing else. Panics (a build error in a const
/// context) with a message starting `GRAPES:` on a malformed grape, and when `N` is not the
/// number of grapes.
pub const fn grapes<const N: usize>(text: &str) -> [PeerAddr; N] {
    assert!(
        N == grape_count(text),
        "grapes::<N>(text): N must be grape_count(text)"
    );
    let bytes = text.as_bytes();
    let mut out = [PeerAddr::new([0; 4], 0); N];
    let mut i = 0;
    let mut n = 0;
    while n < N {
        if n > 0 {
            // `grape` stopped at the comma before this grape.
            i += 1;
        }
        let (addr, next) = grape(bytes, i);
        out[n] = addr;
        i = next;
        n += 1;
    }
    out
}

/// One grape of `bytes` from `start`, spaces around it included: the address and the index
/// of the comma after it, or the end.
const fn grape(bytes: &[u8], start: usize) -> (PeerAddr, usize) {
    let mut i = skip_spaces(bytes, start);
    assert!(
        i < bytes.len() && bytes[i] != b',',
        "GRAPES: expected a.b.c.d:port, e.g. 192.168.1.10:20001"
    );
    let mut ip = [0u8; 4];
    let mut part = 0;
    while part < 4 {
        if part > 0 {
            assert!(
                i < bytes.len() && bytes[i] == b'.',
                "GRAPES: a grape is written a.b.c.d:port, e.g. 192.168.1.10:20001"
            );
            i += 1;
        }
        let (value, count) = digits(bytes, i);
        assert!(count <= 3, "GRAPES: an IPv4 part has 1 to 3 digits");
        assert!(
            count > 0 && value <= 255,
            "GRAPES: a grape is written a.b.c.d:port (parts 0 to 255)"
        );
        ip[part] = value as u8;
        i += count;
        part += 1;
    }
    assert!(
        i < bytes.len() && bytes[i] == b':',
        "GRAPES: a grape is written a.b.c.d:port; each needs its DHT port, e.g. 192.168.1.10:20001"
    );
    i += 1;
    let (port, count) = digits(bytes, i);
    assert!(count > 0 && count <= 5, "GRAPES: a port is 1 to 5 digits");
    assert!(port > 0 && port <= 65535, "GRAPES: a port is 1..=65535");
    i = skip_spaces(bytes, i + count);
    assert!(
        i == bytes.len() || bytes[i] == b',',
        "GRAPES: separate the grapes with commas, e.g. 192.168.1.10:20001,192.168.1.11:20001"
    );
    (PeerAddr::new(ip, port as u16), i)
}

/// The decimal digits of `bytes` from `start`: their value (saturating at `u32::MAX`, which
/// every caller rejects) and how many there are.
const fn digits(bytes: &[u8], start: usize) -> (u32, usize) {
    let mut value: u32 = 0;
    let mut i = start;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        value = value
            .saturating_mul(10)
            .saturating_add((bytes[i] - b'0') as u32);
        i += 1;
    }
    (value, i - start)
}

/// The index of the first byte from `start` on that is not a space.
const fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    // Evaluated by the compiler: the parsers work in a const context, where boards use them.
    const TUTORIAL: [PeerAddr; 2] = grapes("192.168.1.10:20001,192.168.1.10:20002");
    const WORKER_PORT: u16 = port_or(Some("1337"), 1);
    /// The most grapes a board takes.
    const EIGHT: &str =
        "1.0.0.1:1,1.0.0.2:2,1.0.0.3:3,1.0.0.4:4,1.0.0.5:5,1.0.0.6:6,1.0.0.7:7,1.0.0.8:8";

    #[test]
    fn const_evaluation() {
        assert_eq!(
            TUTORIAL,
            [
                PeerAddr::new([192, 168, 1, 10], 20001),
                PeerAddr::new([192, 168, 1, 10], 20002)
            ]
        );
        assert_eq!(WORKER_PORT, 1337);
    }

    #[test]
    fn port_valid() {
        assert_eq!(port("1"), 1);
        assert_eq!(port("1337"), 1337);
        assert_eq!(port("65535"), 65535);
        assert_eq!(port("00080"), 80);
    }

    #[test]
    fn port_or_default_when_unset() {
        assert_eq!(port_or(None, 1337), 1337);
        assert_eq!(port_or(Some("20001"), 1337), 20001);
    }

    #[test]
    #[should_panic(expected = "a port is 1 to 5 digits")]
    fn port_empty() {
        port("");
    }

    #[test]
    #[should_panic(expected = "a port is 1 to 5 digits")]
    fn port_six_digits() {
        port("001337");
    }

    #[test]
    #[should_panic(expected = "a port is decimal digits")]
    fn port_not_digits() {
        port("13a7");
    }

    #[test]
    #[should_panic(expected = "a port is decimal digits")]
    fn port_with_sign() {
        port("+80");
    }

    #[test]
    #[should_panic(expected = "a port is decimal digits")]
    fn port_with_space() {
        port(" 80");
    }

    #[test]
    #[should_panic(expected = "a port is 1..=65535")]
    fn port_zero() {
        port("0");
    }

    #[test]
    #[should_panic(expected = "a port is 1..=65535")]
    fn port_too_big() {
        port("65536");
    }

    #[test]
    #[should_panic(expected = "a port is 1..=65535")]
    fn port_or_checks_a_given_value() {
        port_or(Some("99999"), 1337);
    }

    #[test]
    fn grape_count_counts_commas() {
        assert_eq!(grape_count("10.0.0.1:1"), 1);
        assert_eq!(grape_count("10.0.0.1:1,10.0.0.2:2"), 2);
        assert_eq!(grape_count(""), 1, "an empty text is one (malformed) grape");
        assert_eq!(grape_count(" , ,"), 3, "empty grapes count too");
        assert_eq!(grape_count(EIGHT), 8);
    }

    #[test]
    #[should_panic(expected = "GRAPES: at most 8 grapes")]
    fn grape_count_too_many() {
        grape_count("1.0.0.9:9,1.0.0.1:1,1.0.0.2:2,1.0.0.3:3,1.0.0.4:4,1.0.0.5:5,1.0.0.6:6,1.0.0.7:7,1.0.0.8:8");
    }

    #[test]
    fn grapes_one() {
        assert_eq!(
            grapes::<1>("0.0.0.0:65535"),
            [PeerAddr::new([0, 0, 0, 0], 65535)]
        );
        assert_eq!(
            grapes::<1>("255.255.255.255:1"),
            [PeerAddr::new([255; 4], 1)]
        );
    }

    #[test]
    fn grapes_keep_their_order() {
        assert_eq!(
            grapes::<3>("10.0.0.3:3,10.0.0.1:1,10.0.0.2:2"),
            [
                PeerAddr::new([10, 0, 0, 3], 3),
                PeerAddr::new([10, 0, 0, 1], 1),
                PeerAddr::new([10, 0, 0, 2], 2)
            ]
        );
    }

    #[test]
    fn grapes_spaces_around_each() {
        assert_eq!(
            grapes::<2>(" 192.168.1.10:20001 ,  10.0.0.1:1 "),
            [
                PeerAddr::new([192, 168, 1, 10], 20001),
                PeerAddr::new([10, 0, 0, 1], 1)
            ]
        );
    }

    #[test]
    fn grapes_eight() {
        let all = grapes::<8>(EIGHT);
        for (k, grape) in all.iter().enumerate() {
            let k = k as u8 + 1;
            assert_eq!(*grape, PeerAddr::new([1, 0, 0, k], u16::from(k)));
        }
    }

    #[test]
    #[should_panic(expected = "grapes::<N>(text): N must be grape_count(text)")]
    fn grapes_wrong_n() {
        grapes::<1>("10.0.0.1:1,10.0.0.2:2");
    }

    #[test]
    #[should_panic(expected = "GRAPES: expected a.b.c.d:port")]
    fn grapes_empty() {
        grapes::<1>("");
    }

    #[test]
    #[should_panic(expected = "GRAPES: expected a.b.c.d:port")]
    fn grapes_trailing_comma() {
        grapes::<2>("10.0.0.1:1,");
    }

    #[test]
    #[should_panic(expected = "GRAPES: expected a.b.c.d:port")]
    fn grapes_empty_between_commas() {
        grapes::<3>("10.0.0.1:1, ,10.0.0.2:2");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a grape is written a.b.c.d:port (parts 0 to 255)")]
    fn grapes_part_over_255() {
        grapes::<1>("192.168.1.256:20001");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a grape is written a.b.c.d:port (parts 0 to 255)")]
    fn grapes_hostname() {
        grapes::<1>("localhost:20001");
    }

    #[test]
    #[should_panic(expected = "GRAPES: an IPv4 part has 1 to 3 digits")]
    fn grapes_part_of_four_digits() {
        grapes::<1>("0192.168.1.10:20001");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a grape is written a.b.c.d:port, e.g.")]
    fn grapes_three_parts() {
        grapes::<1>("192.168.1:20001");
    }

    #[test]
    #[should_panic(expected = "each needs its DHT port")]
    fn grapes_no_port() {
        grapes::<1>("192.168.1.10");
    }

    #[test]
    #[should_panic(expected = "each needs its DHT port")]
    fn grapes_five_parts() {
        grapes::<1>("192.168.1.10.1:20001");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a port is 1 to 5 digits")]
    fn grapes_empty_port() {
        grapes::<1>("192.168.1.10:");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a port is 1 to 5 digits")]
    fn grapes_port_of_six_digits() {
        grapes::<1>("192.168.1.10:200010");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a port is 1..=65535")]
    fn grapes_port_zero() {
        grapes::<1>("192.168.1.10:0");
    }

    #[test]
    #[should_panic(expected = "GRAPES: a port is 1..=65535")]
    fn grapes_port_too_big() {
        grapes::<1>("192.168.1.10:65536");
    }

    #[test]
    #[should_panic(expected = "GRAPES: separate the grapes with commas")]
    fn grapes_semicolon() {
        grapes::<1>("10.0.0.1:1;10.0.0.2:2");
    }

    #[test]
    #[should_panic(expected = "GRAPES: separate the grapes with commas")]
    fn grapes_space_separated() {
        grapes::<1>("10.0.0.1:1 10.0.0.2:2");
    }

    #[test]
    #[should_panic(expected = "GRAPES: separate the grapes with commas")]
    fn grapes_junk_after_port() {
        grapes::<1>("10.0.0.1:20001x");
    }
}
