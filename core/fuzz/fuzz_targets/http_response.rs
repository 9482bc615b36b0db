//! Response heads and bodies from arbitrary bytes: never panics, prefixes agree, and bodies
//! (including until-close ones) decode the same in one piece or byte by byte.
#![no_main]

use grenache_core::wire::http::{parse_response, BodyDecoder, BodyKind, HttpError, Status, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fn decode(kind: BodyKind, input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
    let mut dec = BodyDecoder::new(kind, 4096)?;
    let mut body = Vec::new();
    let (mut pos, mut avail) = (0, 0);
    loop {
        if pos == avail {
            if avail == input.len() {
                // The connection closes here.
                let done = dec.finish().is_ok();
                return Ok((body, pos, done));
            }
            avail = if step == 0 {
                input.len()
            } else {
                (avail + step).min(input.len())
            };
        }
        let piece = &input[pos..avail];
        let d = dec.decode(piece)?;
        assert!(d.data.end <= d.consumed && d.consumed <= piece.len());
        body.extend_from_slice(d.data_in(piece));
        pos += d.consumed;
        if d.done {
            return Ok((body, pos, true));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let full = parse_response::<16>(data);
    if let Some(&b) = data.first() {
        let cut = usize::from(b) * data.len() / 256;
        let p = parse_response::<16>(&data[..cut]);
        if p != Ok(Status::Partial) {
            assert_eq!(p, full, "prefix {cut} disagrees");
        }
    }
    if let Ok(Status::Complete((head, n))) = full {
        assert!(n <= data.len() && n <= MAX_HEAD);
        let rest = &data[n..];
        let one = decode(head.body, rest, 0);
        assert_eq!(decode(head.body, rest, 1), one);
        assert_eq!(decode(head.body, rest, 5), one);
    }
});
