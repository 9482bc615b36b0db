//! Node ids and XOR distance.

/// Length of a node id in bytes (the SHA-1 length).
pub const ID_LEN: usize = 20;

/// A 20-byte Kademlia node id, random per process like bittorrent-dht's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub [u8; ID_LEN]);

impl NodeId {
    /// The id made of `bytes`, if there are exactly [`ID_LEN`] of them.
    pub fn from_slice(bytes: &[u8]) -> Option<NodeId> {
        <[u8; ID_LEN]>::try_from(bytes).ok().map(NodeId)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
