//! IPv4 socket addresses as the DHT carries them ("compact peer info": 4 address bytes and a
//! big-endian port).
//!
//! Grapes speak IPv4 only (`udp4` sockets), so this is the one address type of the DHT.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

/// Length of a compact peer: 4 bytes of IPv4 address, 2 bytes of port, big-endian.
pub const COMPACT_PEER_LEN: usize = 6;

/// An IPv4 address and UDP/TCP port.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerAddr {
    /// The IPv4 address, most significant byte first.
    pub ip: [u8; 4],
    /// The port.
    pub port: u16,
}

impl PeerAddr {
    /// The peer `ip:port`.
    pub const fn new(ip: [u8; 4], port: u16) -> PeerAddr {
        PeerAddr { ip, port }
    }

    /// The peer in exactly [`COMPACT_PEER_LEN`] bytes, `None` for any other length.
    pub fn from_compact(bytes: &[u8]) -> Option<PeerAddr> {
        let b = <[u8; COMPACT_PEER_LEN]>::try_from(bytes).ok()?;
        Some(PeerAddr {
            ip: [b[0], b[1], b[2], b[3]],
            port: u16::from_be_bytes([b[4], b[5]]),
        })
    }

    /// The compact form: address bytes then big-endian port.
    pub fn to_compact(&self) -> [u8; COMPACT_PEER_LEN] {
        let [p0, p1] = self.port.to_be_bytes();
        let [a, b, c, d] = self.ip;
        [a, b, c, d, p0, p1]
    }
}

/// A datagram for the caller to send: `len` bytes at the start of the buffer it gave to a
/// `poll_transmit` ([`Node`](crate::dht::node::Node::poll_transmit),
/// [`Announcer`](crate::dht::announcer::Announcer::poll_transmit)), to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Destination.
    pub to: PeerAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
}

impl From<SocketAddrV4> for PeerAddr {
    fn from(addr: SocketAddrV4) -> PeerAddr {
        PeerAddr::new(addr.ip().octets(), addr.port())
    }
}

impl From<PeerAddr> for SocketAddrV4 {
    fn from(peer: PeerAddr) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(peer.ip), peer.port)
    }
}

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
    use std::string::ToString;

    #[test]
    fn compact_roundtrip_and_display() {
        let p = PeerAddr::new([127, 0, 0, 1], 20001);
        assert_eq!(p.to_compact(), [0x7f, 0, 0, 1, 0x4e, 0x21]);
        assert_eq!(PeerAddr::from_compact(&p.to_compact()), Some(p));
        assert_eq!(p.to_string(), "127.0.0.1:20001");
        let sa: SocketAddrV4 = p.into();
        assert_eq!(sa.to_string(), "127.0.0.1:20001");
        assert_eq!(PeerAddr::from(sa), p);
    }

    #[test]
    fn compact_wrong_length_is_none() {
        assert_eq!(PeerAddr::from_compact(&[1, 2, 3, 4, 5]), None);
        assert_eq!(PeerAddr::from_compact(&[1, 2, 3, 4, 5, 6, 7]), None);
    }
}
