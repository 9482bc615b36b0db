//! IPv4 peer addresses and their 6-byte "compact" form.
//!
//! bittorrent-dht is IPv4-only (`encodePeer`, `dht:743-749`): a peer on the wire is 4 address
//! bytes followed by the port, big-endian. The same 6 bytes are what a grape stores per
//! announced service instance.

use core::fmt;

/// Length of a compact peer (`ip[4] ‖ port_be[2]`).
pub const COMPACT_LEN: usize = 6;

/// An IPv4 address and UDP/TCP port.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerAddr {
    /// The IPv4 address, most significant byte first (`[127, 0, 0, 1]`).
    pub ip: [u8; 4],
    /// The port.
    pub port: u16,
}

impl PeerAddr {
    /// The address `ip:port`.
    pub const fn new(ip: [u8; 4], port: u16) -> Self {
        PeerAddr { ip, port }
    }

    /// Decodes the compact form: 4 address bytes, then the port big-endian.
    pub const fn from_compact(bytes: &[u8; COMPACT_LEN]) -> Self {
        PeerAddr {
            ip: [bytes[0], bytes[1], bytes[2], bytes[3]],
            port: u16::from_be_bytes([bytes[4], bytes[5]]),
        }
    }

    /// Decodes the compact form from a slice, if it is exactly [`COMPACT_LEN`] bytes long.
    pub fn from_compact_slice(bytes: &[u8]) -> Option<Self> {
        <&[u8; COMPACT_LEN]>::try_from(bytes)
            .ok()
            .map(Self::from_compact)
    }

    /// The compact form: 4 address bytes, then the port big-endian.
    pub const fn to_compact(&self) -> [u8; COMPACT_LEN] {
        let [p0, p1] = self.port.to_be_bytes();
        let [a, b, c, d] = self.ip;
        [a, b, c, d, p0, p1]
    }
}

/// `a.b.c.d:port`, the form Grape's HTTP `/lookup` answers with.
impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

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
    fn compact_roundtrip_is_big_endian() {
        let a = PeerAddr::new([127, 0, 0, 1], 20002);
        assert_eq!(a.to_compact(), [127, 0, 0, 1, 0x4e, 0x22]);
        assert_eq!(PeerAddr::from_compact(&a.to_compact()), a);
        assert_eq!(PeerAddr::from_compact_slice(&a.to_compact()), Some(a));
        assert_eq!(PeerAddr::from_compact_slice(&[1, 2, 3, 4, 5]), None);
        assert_eq!(PeerAddr::from_compact_slice(&[1, 2, 3, 4, 5, 6, 7]), None);
    }

    #[test]
    fn displays_like_grape_lookup() {
        let a = PeerAddr::new([10, 0, 255, 3], 1337);
        assert_eq!(format!("{a}"), "10.0.255.3:1337");
        assert_eq!(format!("{a:?}"), "10.0.255.3:1337");
    }

    proptest::proptest! {
        #[test]
        fn compact_roundtrip(ip: [u8; 4], port: u16) {
            let a = PeerAddr::new(ip, port);
            proptest::prop_assert_eq!(PeerAddr::from_compact(&a.to_compact()), a);
        }
    }
}
