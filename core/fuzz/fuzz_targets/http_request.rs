//! Request heads and bodies from arbitrary bytes: never panics, a prefix gives `Partial` or the
//! same answer as the whole input, and a body decodes the same whole, in pieces or bytewise.
#![no_main]

use grenache_core::wire::http::{parse_request, BodyDecoder, BodyKind, HttpError, Status, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` in pieces of `step` bytes (0 = all at once): body, bytes used, done.
fn decode(kind: BodyKind, input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
    let mut dec = BodyDecoder::new(kind, 8192)?;
    let mut body = Vec::new();
    let (mut pos, mut avail) = (0, 0);
    loop {
        if pos == avail {
            if avail == input.len() {
                return Ok((body, pos, dec.is_done()));
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
        assert!(d.consumed == piece.len() || !d.data.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let full = parse_request::<16>(data);
    if let Some(&b) = data.first() {
        let cut = usize::from(b) * data.len() / 256;
        let p = parse_request::<16>(&data[..cut]);
        if p != Ok(Status::Partial) {
            assert_eq!(p, full, "prefix {cut} disagrees");
        }
    }
    if let Ok(Status::Complete((head, n))) = full {
        assert!(n <= data.len() && n <= MAX_HEAD);
        assert!(head.headers().len() <= 16);
        let rest = &data[n..];
        let one = decode(head.body, rest, 0);
        assert_eq!(decode(head.body, rest, 1), one);
        assert_eq!(decode(head.body, rest, 7), one);
        if let Ok(mut dec) = BodyDecoder::new(head.body, 8192) {
            let mut buf = rest.to_vec();
            let end = buf.len();
            if let (Ok(st), Ok((body, used, done))) =
                (dec.decode_in_place(&mut buf, 0, 0, end), &one)
            {
                assert_eq!(st.done, *done);
                assert_eq!(st.read, *used);
                assert_eq!(&buf[..st.write], &body[..]);
            }
        }
    }
});
