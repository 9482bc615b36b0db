//! KRPC decode/encode throughput on the largest common datagram: a `get_peers` answer carrying
//! 100 peers (`{id, token, values}`, 887 bytes). Targets: > 1M parses/s on one core.

// A bench is test code: a setup failure should stop it loudly.
#![allow(clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::NodeId;
use grenache_core::wire::krpc::{self, Message};
use std::hint::black_box;

fn peers() -> Vec<PeerAddr> {
    (0..100u16)
        .map(|i| PeerAddr::new([10, 0, (i >> 8) as u8, i as u8], 20000 + i))
        .collect()
}

fn answer(buf: &mut [u8]) -> usize {
    krpc::encode_response_values(
        buf,
        &krpc::tid(7),
        &NodeId([0xb4; 20]),
        &[0x42; 20],
        peers(),
    )
    .expect("fits")
}

fn bench(c: &mut Criterion) {
    let mut buf = [0u8; 1500];
    let n = answer(&mut buf);
    let wire = buf[..n].to_vec();

    let mut g = c.benchmark_group("get_peers_answer_100_values");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| krpc::parse(black_box(&wire)).is_ok())
    });
    g.bench_function("parse_and_read_values", |b| {
        b.iter(|| match krpc::parse(black_box(&wire)) {
            Ok(Message::Response { r, .. }) => r.values.map_or(0, |v| v.iter().count()),
            _ => 0,
        })
    });
    let peers = peers();
    g.bench_function("encode", |b| {
        let mut out = [0u8; 1500];
        b.iter(|| {
            krpc::encode_response_values(
                black_box(&mut out),
                &krpc::tid(7),
                &NodeId([0xb4; 20]),
                &[0x42; 20],
                black_box(&peers).iter().copied(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
