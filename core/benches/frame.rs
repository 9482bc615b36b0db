//! Grenache RPC framing: parsing a typical request and writing its reply.
// Bench code, like tests, may stop at once on a broken invariant.
#![allow(clippy::expect_used)]
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grenache_core::wire::frame::{self, Request};
use grenache_core::wire::json;
use std::hint::black_box;

/// The request of the WebSocket capture in docs/protocol.md §9.2.
const REQUEST: &[u8] = br#"["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world"}]"#;

/// A request with a 1 KiB-ish payload of mixed JSON, as a service with real data sees.
fn larger_request() -> Vec<u8> {
    let mut payload = String::from("{\"items\":[");
    for i in 0..16 {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i} \\u00e9\",\"price\":{}.25,\"tags\":[\"a\",\"b\"],\"ok\":true}}",
            i * 100
        ));
    }
    payload.push_str("]}");
    format!("[\"5f3ccf96-1f02-4c32-9c49-0c17e0583c92\",\"rpc_test\",{payload}]").into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");

    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("parse_request_small", |b| {
        b.iter(|| Request::parse(black_box(REQUEST)))
    });

    let big = larger_request();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("parse_request_1k", |b| {
        b.iter(|| Request::parse(black_box(&big)))
    });
    g.bench_function("validate_1k", |b| {
        b.iter(|| json::validate(black_box(&big)))
    });

    let req = Request::parse(REQUEST).expect("golden request parses");
    let mut out = [0u8; 256];
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_reply_ok", |b| {
        b.iter(|| {
            frame::write_reply_ok(
                black_box(&mut out),
                black_box(req.rid),
                black_box(br#"{"ok":"hi"}"#),
            )
        })
    });
    g.bench_function("write_reply_err", |b| {
        b.iter(|| frame::write_reply_err(black_box(&mut out), black_box(req.rid), "ERR_TIMEOUT"))
    });
    g.bench_function("parse_then_reply", |b| {
        b.iter(|| {
            let r = Request::parse(black_box(REQUEST)).expect("parses");
            frame::write_reply_ok(&mut out, r.rid, r.payload)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
