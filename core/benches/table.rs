//! Routing-table and lookup hot paths: `closest()` on a full table (answering every
//! find_node / get_peers, and seeding every lookup), and a lookup's bookkeeping for one
//! answer carrying 20 nodes.
// Benchmark set-up code, like tests, may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::{NodeId, ID_LEN};
use grenache_core::dht::lookup::{Lookup, LookupAction, LookupConfig};
use grenache_core::dht::table::{Entry, InsertOutcome, RoutingTable, K};
use grenache_core::rng::{Rng, SplitMix64};
use grenache_core::Instant;

/// A table of 640 nodes: 20 in each of the 32 farthest buckets.
fn full_table(rng: &mut SplitMix64) -> RoutingTable<640> {
    let own = NodeId::random(rng);
    let mut rt = RoutingTable::<640>::new(own);
    let mut n = 0u32;
    for bucket in 0..32 {
        for _ in 0..K {
            // Share `bucket` bits with `own`, differ on the next one, random after.
            let mut id = NodeId::random(rng).0;
            for bit in 0..=bucket {
                let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
                let want = if bit == bucket {
                    !own.0[byte]
                } else {
                    own.0[byte]
                };
                id[byte] = (id[byte] & !mask) | (want & mask);
            }
            n += 1;
            let b = n.to_be_bytes();
            let out = rt.insert(
                Instant::ZERO,
                NodeId(id),
                PeerAddr::new([10, b[1], b[2], b[3]], 20000),
            );
            assert_eq!(out, InsertOutcome::Inserted);
        }
    }
    assert_eq!(rt.len(), 640);
    rt
}

fn bench_closest(c: &mut Criterion) {
    let mut rng = SplitMix64::new(7);
    let rt = full_table(&mut rng);
    let targets: Vec<[u8; ID_LEN]> = (0..64)
        .map(|_| {
            let mut t = [0u8; ID_LEN];
            rng.fill_bytes(&mut t);
            t
        })
        .collect();
    let mut i = 0;
    c.bench_function("closest 20 of 640, random 20-byte target", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            let mut out = [Entry::EMPTY; K];
            let n = rt.closest(black_box(&targets[i]), &mut out);
            black_box((n, out))
        })
    });
    c.bench_function("closest 20 of 640, service name", |b| {
        b.iter(|| {
            let mut out = [Entry::EMPTY; K];
            let n = rt.closest(black_box(b"rest:util:net"), &mut out);
            black_box((n, out))
        })
    });
    c.bench_function("closest all 640 (whole table, sorted)", |b| {
        let mut out = [Entry::EMPTY; 640];
        b.iter(|| {
            i = (i + 1) % targets.len();
            let n = rt.closest(black_box(&targets[i]), &mut out);
            black_box(n)
        })
    });
}

fn bench_lookup(c: &mut Criterion) {
    let mut rng = SplitMix64::new(8);
    let own = NodeId::random(&mut rng);
    let target = NodeId::random(&mut rng);
    let seeds: Vec<(Option<NodeId>, PeerAddr)> = (0..20u8)
        .map(|i| {
            (
                Some(NodeId::random(&mut rng)),
                PeerAddr::new([10, 0, 0, i], 1),
            )
        })
        .collect();
    let answer: Vec<(NodeId, PeerAddr)> = (0..20u8)
        .map(|i| (NodeId::random(&mut rng), PeerAddr::new([10, 0, 1, i], 1)))
        .collect();
    c.bench_function(
        "lookup<64>: start, 16 queries, one answer with 20 nodes",
        |b| {
            b.iter(|| {
                let mut l = Lookup::<64>::new(
                    own,
                    &target.0,
                    seeds.iter().copied(),
                    LookupConfig::DEFAULT,
                    Instant::ZERO,
                )
                .unwrap();
                let mut first = None;
                while let LookupAction::Query { to, .. } = l.poll(Instant::ZERO) {
                    first.get_or_insert(to);
                }
                let from = first.unwrap();
                let id = seeds.iter().find(|s| s.1 == from).unwrap().0.unwrap();
                let r = l.on_response(
                    Instant::from_millis(10),
                    from,
                    id,
                    answer.iter().copied(),
                    Some(&[1; 20]),
                );
                black_box((r, l.poll(Instant::from_millis(10))))
            })
        },
    );
}

criterion_group!(benches, bench_closest, bench_lookup);
criterion_main!(benches);
