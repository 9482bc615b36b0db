//! Drives the announce store, the token issuer and the BEP 44 item store with arbitrary
//! operations: nothing may panic, and the bounds and the store's own promises must hold.
#![no_main]

use grenache_core::addr::PeerAddr;
use grenache_core::dht::bep44::ItemStore;
use grenache_core::rng::SplitMix64;
use grenache_core::dht::store::{AnnounceStore, Source};
use grenache_core::dht::token::TokenIssuer;
use grenache_core::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut store = AnnounceStore::<4, 6, 3>::with_hash_seed(1);
    let mut items = ItemStore::<3, 40>::new();
    let mut rng = SplitMix64::new(7);
    let mut tokens = TokenIssuer::new(Instant::ZERO, &mut rng);
    let mut now = 0u64;
    let mut out = [PeerAddr::default(); 4];
    let mut rest = data;
    while let [op, arg, len, tail @ ..] = rest {
        let take = usize::from(*len % 48).min(tail.len());
        let (bytes, tail) = tail.split_at(take);
        rest = tail;
        let addr = PeerAddr::new([10, 0, 0, *arg % 5], u16::from(*arg % 3));
        // Three remote sources and the node itself, so that ownership and the eviction of the
        // heaviest source are exercised.
        let source = match len % 4 {
            0 => Source::Local,
            n => Source::Remote([10, 0, 1, n]),
        };
        match op % 8 {
            0 | 1 => {
                let ttl = Duration::from_millis(u64::from(*len));
                let ok = store
                    .announce(Instant::from_millis(now), bytes, addr, ttl, source)
                    .is_ok();
                if ok {
                    assert!(store.count(bytes) >= 1);
                }
            }
            2 => {
                let before = store.len();
                if store.remove(bytes, addr, source) {
                    assert_eq!(store.len(), before - 1);
                }
            }
            3 => {
                let n = store.sample(Instant::from_millis(now), bytes, &mut rng, &mut out);
                assert!(n <= out.len());
                for i in 0..n {
                    for j in 0..i {
                        assert_ne!(out[i], out[j]);
                    }
                }
            }
            4 => {
                now = now.saturating_add(u64::from(*arg));
                store.expire(Instant::from_millis(now));
                if let Some(t) = store.next_expiry() {
                    assert!(t > Instant::from_millis(now));
                }
                tokens.rotate_if_due(Instant::from_millis(now.saturating_mul(1000)), &mut rng);
            }
            5 => {
                let ip = [*arg, *len, 0, 1];
                assert!(tokens.verify(ip, &tokens.token(ip)));
                let _ = tokens.verify(ip, bytes);
            }
            6 => {
                if let Ok(key) = items.put_immutable(bytes, source) {
                    assert_eq!(items.peek(&key).map(|i| i.v), Some(bytes));
                }
            }
            _ => {
                let k = [*arg; 32];
                let sig = [*len; 64];
                let salt = (arg % 2 == 0).then_some(bytes.get(..4).unwrap_or(bytes));
                let r = items.put_mutable(&k, salt, i64::from(*len), &sig, bytes, Some(1), source);
                assert!(r.is_err());
            }
        }
        assert!(store.len() <= 6 && store.names_len() <= 4);
        assert!(items.len() <= 3);
    }
});
