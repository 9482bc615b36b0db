//! Feeds arbitrary bytes to a (server) `WsConnection`, split into reads at fuzzer-chosen points,
//! and checks that one-shot and chunked feeding agree and that every event is well-formed.
#![no_main]

use grenache_core::wire::ws::{Event, WsConnection, WsError, MAX_CONTROL_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

fn own(e: Event<'_>) -> Owned {
    match e {
        Event::Text(s) => Owned::Text(s.as_bytes().to_vec()),
        Event::Binary(b) => Owned::Binary(b.to_vec()),
        Event::Ping(b) => {
            assert!(b.len() <= 125);
            Owned::Ping(b.to_vec())
        }
        Event::Pong(b) => {
            assert!(b.len() <= 125);
            Owned::Pong(b.to_vec())
        }
        Event::Close { code, reason } => {
            assert!(reason.len() <= 123);
            Owned::Close(code, reason.as_bytes().to_vec())
        }
    }
}

fn run(data: &[u8], chunk: usize) -> (Vec<Owned>, Option<WsError>, Vec<Vec<u8>>) {
    let mut conn = WsConnection::<64>::new();
    let mut events = Vec::new();
    let mut err = None;
    let mut buf = data.to_vec();
    'outer: for piece in buf.chunks_mut(chunk.max(1)) {
        let len = piece.len();
        let mut at = 0;
        while at < len {
            match conn.feed(&mut piece[at..]) {
                Ok((n, ev)) => {
                    assert!(n <= len - at);
                    at += n;
                    match ev {
                        Some(e) => {
                            let e = own(e);
                            if let Owned::Text(t) | Owned::Binary(t) = &e {
                                assert!(t.len() <= 64);
                            }
                            events.push(e);
                        }
                        None => assert_eq!(at, len),
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break 'outer;
                }
            }
        }
    }
    let mut out = [0u8; MAX_CONTROL_FRAME_LEN];
    let mut frames = Vec::new();
    while let Ok(Some(n)) = conn.poll_transmit(&mut out) {
        frames.push(out[..n].to_vec());
        assert!(frames.len() <= 2);
    }
    if err.is_some() {
        assert!(conn.is_closed());
    }
    (events, err, frames)
}

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(ctl) + 1;
    let one_shot = run(data, data.len());
    let chunked = run(data, chunk);
    assert_eq!(one_shot, chunked);
});
