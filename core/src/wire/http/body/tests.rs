use super::*;
use crate::wire::http::tests::*;
use crate::wire::http::*;
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

// ---- bodies ---------------------------------------------------------------------------

#[test]
fn length_body_split_and_remainder() {
    let input = b"hello worldNEXT";
    for pieces in [&[0usize][..], &[1], &[3, 1], &[5, 100]] {
        let (body, used, done) = decode_pieces(BodyKind::Length(11), 64, input, pieces).unwrap();
        assert_eq!(
            (body.as_slice(), used, done),
            (&b"hello world"[..], 11, true)
        );
    }
    let mut dec = BodyDecoder::new(BodyKind::Length(11), 64).unwrap();
    assert_eq!(dec.remaining(), Some(11));
    let d = dec.decode(b"hel").unwrap();
    assert_eq!(
        d,
        Decoded {
            consumed: 3,
            data: 0..3,
            done: false
        }
    );
    assert_eq!((dec.remaining(), dec.received()), (Some(8), 3));
    assert_eq!(dec.finish(), Err(HttpError::UnexpectedEof));
    let d = dec.decode(b"").unwrap();
    assert_eq!(
        d,
        Decoded {
            consumed: 0,
            data: 0..0,
            done: false
        }
    );
}

#[test]
fn no_body_is_done_at_once() {
    for kind in [BodyKind::None, BodyKind::Length(0)] {
        let mut dec = BodyDecoder::new(kind, 0).unwrap();
        assert!(dec.is_done());
        assert_eq!(
            dec.decode(b"GET").unwrap(),
            Decoded {
                consumed: 0,
                data: 0..0,
                done: true
            }
        );
        assert_eq!(dec.finish(), Ok(()));
    }
}

#[test]
fn body_limit_is_413() {
    // The grape's limit: check_maxPayloadSize 8192.
    assert!(BodyDecoder::new(BodyKind::Length(8192), 8192).is_ok());
    assert_eq!(
        BodyDecoder::new(BodyKind::Length(8193), 8192),
        Err(HttpError::BodyTooLarge)
    );
    // Chunked: found as soon as a chunk size pushes the total over.
    let ok = b"1000\r\n";
    let mut dec = BodyDecoder::new(BodyKind::Chunked, 8192).unwrap();
    assert!(dec.decode(ok).is_ok());
    let mut dec = BodyDecoder::new(BodyKind::Chunked, 8192).unwrap();
    assert_eq!(dec.decode(b"2001"), Err(HttpError::BodyTooLarge));
    let mut wire = Vec::new();
    wire.extend_from_slice(&chunk(&[b'a'; 8000]));
    wire.extend_from_slice(&chunk(&[b'b'; 192]));
    let mut exact = wire.clone();
    exact.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        decode_all(BodyKind::Chunked, 8192, &exact).unwrap().0.len(),
        8192
    );
    wire.extend_from_slice(&chunk(b"c"));
    assert_eq!(
        decode_all(BodyKind::Chunked, 8192, &wire),
        Err(HttpError::BodyTooLarge)
    );
    // Until close: counted as it arrives.
    let mut dec = BodyDecoder::new(BodyKind::UntilClose, 4).unwrap();
    assert!(dec.decode(b"abcd").is_ok());
    assert_eq!(dec.decode(b"e"), Err(HttpError::BodyTooLarge));
}

#[test]
fn chunked_extensions_and_trailers() {
    let input =
        b"5;name=value;x\r\nhello\r\n1 ; ext\r\n!\r\n00\r\nExpires: never\r\nX-Y: z\r\n\r\nNEXT";
    let (body, used, done) = decode_all(BodyKind::Chunked, 100, input).unwrap();
    assert!(done);
    assert_eq!(body, b"hello!");
    assert_eq!(&input[used..], b"NEXT");
    // Upper-case hex and leading zeros.
    let (body, _, done) =
        decode_all(BodyKind::Chunked, 100, b"0A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert!(done);
    assert_eq!(body, b"0123456789");
}

#[test]
fn bad_chunks_are_400() {
    let cases: &[(&[u8], HttpError)] = &[
        (b"\r\n", HttpError::InvalidChunkSize),
        (b"zz\r\n", HttpError::InvalidChunkSize),
        (b"-1\r\n", HttpError::InvalidChunkSize),
        (b"5\n", HttpError::InvalidChunkSize),
        (b"5\rx", HttpError::InvalidChunkSize),
        (b"5 x\r\n", HttpError::InvalidChunkSize),
        (b"5;a\nb\r\n", HttpError::InvalidChunkSize),
        (b"00000000000000001\r\n", HttpError::InvalidChunkSize),
        (b"5\r\nhelloX", HttpError::InvalidChunk),
        (b"5\r\nhello\rX", HttpError::InvalidChunk),
        (b"5\r\nhello\n", HttpError::InvalidChunk),
        (b"0\r\nA: b\n", HttpError::InvalidChunk),
        (b"0\r\nA: b\rX", HttpError::InvalidChunk),
        (b"0\r\n\rX", HttpError::InvalidChunk),
        (b"0\r\n\n", HttpError::InvalidChunk),
    ];
    for &(input, want) in cases {
        let got = decode_all(BodyKind::Chunked, u64::MAX, input);
        assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(input));
        assert_eq!(want.status(), 400);
    }
    // 16 digits are fine (a u64); the limit decides.
    let mut dec = BodyDecoder::new(BodyKind::Chunked, u64::MAX).unwrap();
    assert!(dec.decode(b"ffffffffffffffff\r\n").is_ok());
    // Extension length is bounded.
    let mut long = b"1;".to_vec();
    long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXT));
    long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    assert!(decode_all(BodyKind::Chunked, 10, &long).is_ok());
    long.insert(3, b'x');
    assert_eq!(
        decode_all(BodyKind::Chunked, 10, &long),
        Err(HttpError::InvalidChunkSize)
    );
    // Trailers are bounded by MAX_HEAD.
    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() < MAX_HEAD + 100 {
        trailers.extend_from_slice(b"X-Pad: 0123456789\r\n");
    }
    assert_eq!(
        decode_all(BodyKind::Chunked, 10, &trailers),
        Err(HttpError::HeadTooLarge)
    );
}

#[test]
fn chunked_byte_by_byte_equals_one_shot() {
    let input = &RPC_STREAM[req(RPC_STREAM).1..];
    let one = decode_all(BodyKind::Chunked, 100, input).unwrap();
    for pieces in [&[1usize][..], &[2], &[3, 1, 7], &[13]] {
        assert_eq!(
            decode_pieces(BodyKind::Chunked, 100, input, pieces).unwrap(),
            one
        );
    }
}

#[test]
fn until_close_and_eof() {
    let mut dec = BodyDecoder::new(BodyKind::UntilClose, 100).unwrap();
    let d = dec.decode(b"abc").unwrap();
    assert_eq!(
        d,
        Decoded {
            consumed: 3,
            data: 0..3,
            done: false
        }
    );
    assert!(!dec.is_done());
    assert_eq!(dec.finish(), Ok(()));
    assert!(dec.is_done());
    let mut dec = BodyDecoder::new(BodyKind::Chunked, 100).unwrap();
    dec.decode(b"3\r\nab").unwrap();
    assert_eq!(dec.finish(), Err(HttpError::UnexpectedEof));
}

#[test]
fn decode_in_place_compacts_chunks() {
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut buf = Vec::new();
    buf.extend_from_slice(head);
    buf.extend_from_slice(b"6\r\nhello \r\n5;e\r\nworld\r\n0\r\n\r\nGET /");
    let total = buf.len();
    let (h, n) = req(&buf);
    let mut dec = BodyDecoder::new(h.body, 100).unwrap();
    // Bytes arrive in two reads: the decoder picks up where it stopped.
    let split = n + 12;
    let st = dec.decode_in_place(&mut buf, n, n, split).unwrap();
    assert!(!st.done);
    assert_eq!(st.read, split);
    let st = dec
        .decode_in_place(&mut buf, st.read, st.write, total)
        .unwrap();
    assert!(st.done);
    assert_eq!(&buf[n..st.write], b"hello world");
    assert_eq!(&buf[st.read..], b"GET /");
    // Bad cursors stop without touching anything.
    let mut dec = BodyDecoder::new(BodyKind::Length(3), 100).unwrap();
    let mut small = *b"abc";
    let st = dec.decode_in_place(&mut small, 2, 3, 3).unwrap();
    assert_eq!(
        st,
        InPlace {
            read: 2,
            write: 3,
            done: false
        }
    );
    let st = dec.decode_in_place(&mut small, 0, 0, 9).unwrap();
    assert_eq!(
        st,
        InPlace {
            read: 0,
            write: 0,
            done: false
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn body_decoder_never_panics(
        input in prop::collection::vec(any::<u8>(), 0..600),
        kind in prop_oneof![
            Just(BodyKind::None),
            (0u64..1000).prop_map(BodyKind::Length),
            Just(BodyKind::Chunked),
            Just(BodyKind::UntilClose),
        ],
        max in 0u64..2000,
        pieces in prop::collection::vec(0usize..40, 1..6),
    ) {
        let _ = decode_pieces(kind, max, &input, &pieces);
        if let Ok(mut dec) = BodyDecoder::new(kind, max) {
            let mut buf = input.clone();
            let end = buf.len();
            let _ = dec.decode_in_place(&mut buf, 0, 0, end);
        }
    }

    #[test]
    fn chunked_split_invariance(
        body in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(1usize..50, 0..10),
        pieces in prop::collection::vec(1usize..20, 1..5),
        damage in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut wire = Vec::new();
        chunked_body(&body, &cuts, &mut wire);
        if let Some((at, byte)) = damage {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        wire.extend_from_slice(b"NEXT");
        let one = decode_all(BodyKind::Chunked, 1000, &wire);
        let split = decode_pieces(BodyKind::Chunked, 1000, &wire, &pieces);
        let bytewise = decode_pieces(BodyKind::Chunked, 1000, &wire, &[1]);
        prop_assert_eq!(&split, &one);
        prop_assert_eq!(&bytewise, &one);
        if damage.is_none() {
            let (got, used, done) = one.unwrap();
            prop_assert!(done);
            prop_assert_eq!(got, body);
            prop_assert_eq!(&wire[used..], b"NEXT");
        }
        // In place gives the same body.
        if let Ok((want, used, true)) = decode_all(BodyKind::Chunked, 1000, &wire) {
            let mut buf = wire.clone();
            let mut dec = BodyDecoder::new(BodyKind::Chunked, 1000).unwrap();
            let end = buf.len();
            let st = dec.decode_in_place(&mut buf, 0, 0, end).unwrap();
            prop_assert!(st.done);
            prop_assert_eq!(st.read, used);
            prop_assert_eq!(&buf[..st.write], &want[..]);
        }
    }

}
