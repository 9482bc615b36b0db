//! IPv4 socket addresses as the DHT sees them.
//!
//! The grape's DHT is IPv4 only (`udp4` socket, 6-byte compact peers and 26-byte compact
//! nodes, grape.md §5.1, §5.4), so the core carries addresses as four bytes and a port rather
//! than `core::net::SocketAddr`: the type is `Copy`, 6 bytes of payload, and converts to and
//! from the compact wire form without any fallible step.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

/// Length of the compact form: 4 address bytes, then the port big-endian (BEP 5).
pub const COMPACT_ADDR_LEN: usize = 6;

/// An IPv4 address and UDP port.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerAddr {
    /// The IPv4 address, network order (`[127, 0, 0, 1]`).
    pub ip: [u8; 4],
    /// The port.
    pub port: u16,
}

impl PeerAddr {
    /// The address `ip:port`.
    pub const fn new(ip: [u8; 4], port: u16) -> Self {
        PeerAddr { ip, port }
    }

    /// Decodes the 6-byte compact form (`values` entries, the tail of a compact node).
    pub const fn from_compact(b: &[u8; COMPACT_ADDR_LEN]) -> Self {
        PeerAddr {
            ip: [b[0], b[1], b[2], b[3]],
            port: u16::from_be_bytes([b[4], b[5]]),
        }
    }

    /// The 6-byte compact form.
    pub const fn to_compact(&self) -> [u8; COMPACT_ADDR_LEN] {
        let p = self.port.to_be_bytes();
        [self.ip[0], self.ip[1], self.ip[2], self.ip[3], p[0], p[1]]
    }
}

impl From<SocketAddrV4> for PeerAddr {
    fn from(a: SocketAddrV4) -> Self {
        PeerAddr {
            ip: a.ip().octets(),
            port: a.port(),
        }
    }
}

impl From<PeerAddr> for SocketAddrV4 {
    fn from(a: PeerAddr) -> Self {
        SocketAddrV4::new(Ipv4Addr::from(a.ip), a.port)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

// `ip:port` is easier to read in test failures and logs than the struct form.
impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn compact_roundtrip_matches_the_wire_example() {
        // grape.md §5.7: 7f000001 4e22 = 127.0.0.1:20002.
        let a = PeerAddr::from_compact(&[0x7f, 0, 0, 1, 0x4e, 0x22]);
        assert_eq!(a, PeerAddr::new([127, 0, 0, 1], 20002));
        assert_eq!(a.to_compact(), [0x7f, 0, 0, 1, 0x4e, 0x22]);
        assert_eq!(format!("{a}"), "127.0.0.1:20002");
        assert_eq!(format!("{a:?}"), "127.0.0.1:20002");
    }

    #[test]
    fn converts_to_and_from_socket_addr() {
        let s: SocketAddrV4 = "10.1.2.3:6881".parse().unwrap();
        let a = PeerAddr::from(s);
        assert_eq!(a, PeerAddr::new([10, 1, 2, 3], 6881));
        assert_eq!(SocketAddrV4::from(a), s);
    }

    proptest::proptest! {
        #[test]
        fn compact_roundtrips(b in proptest::array::uniform6(proptest::num::u8::ANY)) {
            proptest::prop_assert_eq!(PeerAddr::from_compact(&b).to_compact(), b);
        }
    }
}
