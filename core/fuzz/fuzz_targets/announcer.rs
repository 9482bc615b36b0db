//! The announce client fed arbitrary datagrams, some of them answers built around the
//! transaction id of its last query (so the fuzzer reaches the traversal and the announce):
//! never panics, and once nothing answers any more, every round ends.
#![no_main]

use grenache_core::addr::PeerAddr;
use grenache_core::dht::announcer::{Announcer, MAX_QUERIES};
use grenache_core::wire::krpc;
use grenache_core::rng::SplitMix64;
use grenache_core::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

const SEEDS: [PeerAddr; 2] = [
    PeerAddr::new([10, 0, 0, 1], 20001),
    PeerAddr::new([10, 0, 0, 2], 20001),
];

fuzz_target!(|data: &[u8]| {
    let mut rng = SplitMix64::new(1);
    let mut a: Announcer<8> = Announcer::new(&mut rng);
    a.start(&mut rng, b"svc", 1337, &SEEDS).expect("valid arguments");
    let mut now = Instant::from_millis(0);
    let mut out = [0u8; 512];
    let mut last: Option<(PeerAddr, Vec<u8>)> = None;
    for chunk in data.split(|&b| b == 0xff) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        while let Some(tx) = a.poll_transmit(now, &mut out) {
            let t = match krpc::parse(&out[..tx.len]) {
                Ok(m) => m.t().to_vec(),
                Err(e) => panic!("the client sent a malformed query: {e:?}"),
            };
            last = Some((tx.to, t));
        }
        match op % 4 {
            0 => now = now.saturating_add(Duration::from_millis(u64::from(op) * 20)),
            1 => a.handle_timeout(now),
            2 => {
                // An answer to the last query: `rest` is the raw `r` dictionary's inside.
                if let Some((from, t)) = &last {
                    let mut d = b"d1:rd".to_vec();
                    d.extend_from_slice(rest);
                    d.extend_from_slice(format!("e1:t{}:", t.len()).as_bytes());
                    d.extend_from_slice(t);
                    d.extend_from_slice(b"1:y1:re");
                    let _ = a.handle_datagram(*from, &d, &mut out);
                }
            }
            _ => {
                let from = SEEDS[usize::from(op / 4) % 2];
                if let Some(n) = a.handle_datagram(from, rest, &mut out) {
                    assert!(krpc::parse(&out[..n]).is_ok(), "a malformed answer");
                }
            }
        }
    }
    // Silence from now on: queries time out, the round ends.
    for _ in 0..=usize::from(MAX_QUERIES) + 16 {
        while a.poll_transmit(now, &mut out).is_some() {}
        if a.poll_done().is_some() {
            return;
        }
        now = now.saturating_add(Duration::from_secs(3));
        a.handle_timeout(now);
    }
    panic!("the round did not end");
});
