//! gzip as grenache-nodejs-http uses it (`grc-compress: gzip`): compressing as Node's `zlib`,
//! and inflating bounded by a size limit and a memory budget.

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use super::server::SMALL_MESSAGE;
use crate::limits::Reservation;

/// gzip as Node's `zlib.gzip`: default level, OS byte 3 (Unix).
pub(crate) fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .operating_system(3)
        .write(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

#[derive(Debug, PartialEq)]
pub(crate) enum Gunzip {
    /// Not gzip data.
    Invalid,
    /// More than the limit once decompressed (a "zip bomb" stops here).
    TooLarge,
    /// The server's memory budget cannot hold the decompressed data.
    OverBudget,
}

/// Decompresses `data` (one or more gzip members) into at most `max` bytes.
pub(crate) fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, Gunzip> {
    inflate(data, max, None)
}

/// Like [`gunzip`], charging the output beyond [`SMALL_MESSAGE`] to `charge` as it grows, so
/// that a bomb stops when the budget is spent rather than after allocating `max` bytes.
pub(crate) fn inflate(
    data: &[u8],
    max: usize,
    mut charge: Option<&mut Reservation>,
) -> Result<Vec<u8>, Gunzip> {
    if data.is_empty() {
        return Err(Gunzip::Invalid);
    }
    let mut decoder = MultiGzDecoder::new(data);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; INFLATE_CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Gunzip::Invalid),
        };
        let len = out.len().saturating_add(n);
        if len > max {
            return Err(Gunzip::TooLarge);
        }
        if let Some(charge) = charge.as_deref_mut() {
            if len > SMALL_MESSAGE && !charge.try_grow_to(len) {
                return Err(Gunzip::OverBudget);
            }
        }
        out.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(out)
}

/// Bytes inflated per step (and per check of the limits).
const INFLATE_CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryBudget;

    #[test]
    fn gzip_roundtrip_and_node_header() {
        let packed = gzip(b"[\"r\",null,1]").unwrap();
        assert_eq!(&packed[..3], &[0x1f, 0x8b, 0x08]);
        assert_eq!(packed[9], 3, "OS byte as Node's zlib");
        assert_eq!(gunzip(&packed, 100).unwrap(), b"[\"r\",null,1]");
    }

    #[test]
    fn inflating_is_charged_and_stops_at_the_budget() {
        let bomb = gzip(&vec![0u8; 4 << 20]).unwrap();
        let budget = MemoryBudget::new(1 << 20);
        let mut charge = budget.reservation();
        assert_eq!(
            inflate(&bomb, 100 << 20, Some(&mut charge)),
            Err(Gunzip::OverBudget)
        );
        assert!(budget.used() <= 1 << 20);
        drop(charge);
        let small = gzip(&vec![1u8; SMALL_MESSAGE]).unwrap();
        let mut charge = budget.reservation();
        let _full = budget.try_reserve(1 << 20).unwrap();
        assert_eq!(
            inflate(&small, 100 << 20, Some(&mut charge)).map(|v| v.len()),
            Ok(SMALL_MESSAGE),
            "small bodies are not charged, so they pass when the budget is spent"
        );
        let packed = gzip(&vec![2u8; 200 << 10]).unwrap();
        let mut charge = MemoryBudget::new(1 << 20).reservation();
        assert!(inflate(&packed, 100 << 20, Some(&mut charge)).is_ok());
        assert_eq!(charge.bytes(), 200 << 10);
    }

    #[test]
    fn gunzip_is_bounded_and_total() {
        let bomb = gzip(&vec![0u8; 1 << 20]).unwrap();
        assert!(bomb.len() < 10_000);
        assert_eq!(gunzip(&bomb, 1000), Err(Gunzip::TooLarge));
        assert_eq!(gunzip(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(gunzip(b"", 10), Err(Gunzip::Invalid));
        assert_eq!(gunzip(b"plain text", 100), Err(Gunzip::Invalid));
        let mut two = gzip(b"ab").unwrap();
        two.extend(gzip(b"cd").unwrap());
        assert_eq!(gunzip(&two, 10).unwrap(), b"abcd");
    }
}
