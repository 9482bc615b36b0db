//! WebSocket frame throughput: a ~100-byte masked text frame, the size of a typical Grenache
//! request (`["<uuid>","rpc_test",{"hello":"world"}]`), parsed and unmasked.
// Bench setup may panic on impossible failures, like tests.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grenache_core::wire::ws::{
    apply_mask, parse_frame_header, write_frame, Opcode, Status, WsConnection,
};

const REQUEST: &[u8] =
    br#"["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world","n":12345678}]"#;

fn masked_frame() -> Vec<u8> {
    let mut out = vec![0u8; REQUEST.len() + 14];
    let n = write_frame(
        &mut out,
        true,
        Opcode::Text,
        Some([0x37, 0xfa, 0x21, 0x3d]),
        REQUEST,
    )
    .expect("fits");
    out.truncate(n);
    out
}

fn bench_ws(c: &mut Criterion) {
    let frame = masked_frame();
    let mut g = c.benchmark_group("ws");
    g.throughput(Throughput::Elements(1));

    // The codec alone: header parse, in-place unmask, UTF-8 check.
    g.bench_function("parse_unmask_text_100B", |b| {
        let mut buf = frame.clone();
        b.iter(|| {
            buf.copy_from_slice(&frame);
            let Ok(Status::Complete((h, n))) = parse_frame_header(black_box(&buf)) else {
                unreachable!()
            };
            let payload = &mut buf[n..];
            if let Some(k) = h.mask {
                apply_mask(k, 0, payload);
            }
            black_box(core::str::from_utf8(payload).is_ok())
        })
    });

    // The whole receive path of a server connection (zero-copy fast path).
    g.bench_function("connection_feed_text_100B", |b| {
        let mut conn = WsConnection::<4096>::new();
        let mut buf = frame.clone();
        b.iter(|| {
            buf.copy_from_slice(&frame);
            let r = conn.feed(black_box(&mut buf));
            black_box(matches!(r, Ok((_, Some(_)))))
        })
    });

    // Same frame delivered in two reads: the copying path.
    g.bench_function("connection_feed_split_text_100B", |b| {
        let mut conn = WsConnection::<4096>::new();
        let mut buf = frame.clone();
        b.iter(|| {
            buf.copy_from_slice(&frame);
            let (a, rest) = buf.split_at_mut(40);
            let _ = conn.feed(black_box(a));
            let r = conn.feed(black_box(rest));
            black_box(matches!(r, Ok((_, Some(_)))))
        })
    });

    // Writing a server reply frame.
    g.bench_function("write_server_text_100B", |b| {
        let mut out = [0u8; 256];
        b.iter(|| {
            black_box(write_frame(
                &mut out,
                true,
                Opcode::Text,
                None,
                black_box(REQUEST),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ws);
criterion_main!(benches);
