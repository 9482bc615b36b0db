//! Announce store, token and BEP 44 costs on a host-sized store (10,000 names).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use grenache_core::addr::PeerAddr;
use grenache_core::dht::bep44::ItemStore;
use grenache_core::dht::store::{AnnounceStore, Source};
use grenache_core::dht::token::TokenIssuer;
use grenache_core::rng::SplitMix64;
use grenache_core::{Duration, Instant};

const NAMES: usize = 10_000;
type Store = AnnounceStore<NAMES, 20_000, 100>;

fn name(i: usize) -> Vec<u8> {
    format!("rest:service:{i}").into_bytes()
}

fn filled() -> Box<Store> {
    let mut s: Box<Store> = Box::new(Store::with_hash_seed(0x5eed));
    let ttl = Duration::from_secs(120);
    // 9,999 names with one peer each, and one name with 100 peers for the sampling bench.
    for i in 0..NAMES - 1 {
        let ip = (i as u32).to_be_bytes();
        s.announce(
            Instant::ZERO,
            &name(i),
            PeerAddr::new(ip, 1337),
            ttl,
            Source::Remote(ip),
        )
        .unwrap();
    }
    for p in 0..100u16 {
        s.announce(
            Instant::ZERO,
            b"rest:busy",
            PeerAddr::new([10, 0, 0, 1], 2000 + p),
            ttl,
            Source::Remote([10, 0, 0, 1]),
        )
        .unwrap();
    }
    s
}

fn store(c: &mut Criterion) {
    let mut s = filled();
    let names: Vec<Vec<u8>> = (0..NAMES - 1).map(name).collect();
    let ttl = Duration::from_secs(120);
    let mut i = 0usize;
    let mut now = 0u64;
    c.bench_function("store/announce refresh (10k names)", |b| {
        b.iter(|| {
            i = (i + 7919) % names.len();
            now += 1;
            let ip = (i as u32).to_be_bytes();
            s.announce(
                Instant::from_millis(now),
                black_box(&names[i]),
                PeerAddr::new(ip, 1337),
                ttl,
                Source::Remote(ip),
            )
            .unwrap();
        })
    });
    let mut port = 0u16;
    c.bench_function(
        "store/announce new peer, per-name cap full (100, four walks)",
        |b| {
            b.iter(|| {
                port = port.wrapping_add(1).max(1);
                now += 1;
                s.announce(
                    Instant::from_millis(now),
                    black_box(b"rest:busy"),
                    PeerAddr::new([10, 0, 0, 2], port),
                    ttl,
                    Source::Remote([10, 0, 0, 2]),
                )
                .unwrap();
            })
        },
    );
    let mut fresh = 0u64;
    c.bench_function(
        "store/announce new name, store full (evicts its own oldest)",
        |b| {
            let mut full: Box<AnnounceStore<NAMES, NAMES, 100>> =
                Box::new(AnnounceStore::with_hash_seed(1));
            for i in 0..NAMES {
                full.announce(
                    Instant::ZERO,
                    &name(i),
                    PeerAddr::new([1; 4], 1),
                    ttl,
                    Source::Remote([1; 4]),
                )
                .unwrap();
            }
            b.iter(|| {
                fresh += 1;
                let n = format!("fresh:{fresh}");
                full.announce(
                    Instant::ZERO,
                    black_box(n.as_bytes()),
                    PeerAddr::new([1; 4], 1),
                    ttl,
                    Source::Remote([1; 4]),
                )
                .unwrap();
            })
        },
    );
    let mut rng = SplitMix64::new(1);
    let mut out = [PeerAddr::default(); 100];
    let t = Instant::from_millis(now);
    c.bench_function("store/sample 100 of 100", |b| {
        b.iter(|| black_box(s.sample(t, black_box(b"rest:busy"), &mut rng, &mut out)))
    });
    c.bench_function("store/sample 100 of 1", |b| {
        b.iter(|| {
            i = (i + 7919) % names.len();
            black_box(s.sample(t, black_box(&names[i]), &mut rng, &mut out))
        })
    });
    c.bench_function("store/sample unknown name", |b| {
        b.iter(|| black_box(s.sample(t, black_box(b"rest:nobody"), &mut rng, &mut out)))
    });
}

fn token(c: &mut Criterion) {
    let mut rng = SplitMix64::new(2);
    let t = TokenIssuer::new(Instant::ZERO, &mut rng);
    let tok = t.token([192, 168, 1, 20]);
    c.bench_function("token/issue", |b| {
        b.iter(|| black_box(t.token(black_box([192, 168, 1, 20]))))
    });
    c.bench_function("token/verify", |b| {
        b.iter(|| black_box(t.verify(black_box([192, 168, 1, 20]), black_box(&tok))))
    });
}

fn bep44(c: &mut Criterion) {
    let mut s: Box<ItemStore<1000>> = Box::new(ItemStore::new());
    let keys: Vec<_> = (0..1000)
        .map(|i| {
            let v = format!("v{i}");
            s.put_immutable(format!("{}:{v}", v.len()).as_bytes(), Source::Local)
                .unwrap()
        })
        .collect();
    let mut i = 0usize;
    c.bench_function("bep44/get hit, any of 1000 items (linear scan)", |b| {
        b.iter(|| {
            i = (i + 7) % keys.len();
            black_box(s.get(black_box(&keys[i])).map(|item| item.v.len()))
        })
    });
    c.bench_function(
        "bep44/put immutable 1000 B (1000 items, evicts its own LRU)",
        |b| {
            let mut v = b"1000:".to_vec();
            v.extend([b'x'; 1000]);
            let mut n = 0u32;
            b.iter(|| {
                n = n.wrapping_add(1);
                v[5..9].copy_from_slice(&n.to_be_bytes());
                black_box(s.put_immutable(black_box(&v), Source::Local).unwrap())
            })
        },
    );
}

criterion_group!(benches, store, token, bep44);

// `criterion_main!`, but on a thread with a big stack: the stores are plain values of a few
// MB, and `Box::new` may build them on the stack first.
fn main() {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            benches();
            Criterion::default().configure_from_args().final_summary();
        })
        .unwrap()
        .join()
        .unwrap();
}
