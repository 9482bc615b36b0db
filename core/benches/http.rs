//! HTTP/1.1 codec throughput on the messages Grenache actually exchanges.
//!
//! The main case is a grape receiving Link's `POST /lookup` (node-fetch's header set, see
//! `core/src/wire/http/tests.rs`) with body `{"data":"fibonacci_worker","rid":"<uuid>"}`: head
//! parse alone, and head parse plus body decode. Target: > 1 M requests/s.

// Bench inputs are fixed and known good: a failure is a bug to crash on, as in a test.
#![allow(clippy::unwrap_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grenache_core::wire::http::{
    parse_request, parse_response, write_response_head, BodyDecoder, BodyKind, Header, Status,
};
use std::hint::black_box;

const BODY: &[u8] =
    b"{\"data\":\"fibonacci_worker\",\"rid\":\"0b0f2a6e-0f4c-4d4b-9c52-6a0c39e1d9a4\"}";

fn lookup_request() -> Vec<u8> {
    let mut v = format!(
        "POST /lookup HTTP/1.1\r\n\
content-type: application/json\r\n\
Accept: */*\r\n\
Content-Length: {}\r\n\
User-Agent: node-fetch/1.0 (+https://github.com/bitinn/node-fetch)\r\n\
Accept-Encoding: gzip,deflate\r\n\
Host: 127.0.0.1:30001\r\n\
Connection: keep-alive\r\n\
\r\n",
        BODY.len()
    )
    .into_bytes();
    v.extend_from_slice(BODY);
    v
}

const GRAPE_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2026 18:42:00 GMT\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Content-Length: 18\r\n\
\r\n\
[\"127.0.0.1:1337\"]";

fn bench_http(c: &mut Criterion) {
    let req = lookup_request();
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse_lookup_head", |b| {
        b.iter(|| {
            let r = parse_request::<16>(black_box(&req));
            match r {
                Ok(Status::Complete((h, n))) => black_box((h.body, h.keep_alive, n)),
                _ => unreachable!(),
            }
        })
    });

    g.bench_function("parse_lookup_head_and_body", |b| {
        b.iter(|| {
            let buf = black_box(&req[..]);
            let Ok(Status::Complete((h, n))) = parse_request::<16>(buf) else {
                unreachable!()
            };
            let mut dec = BodyDecoder::new(h.body, 8192).unwrap();
            let rest = &buf[n..];
            let d = dec.decode(rest).unwrap();
            black_box((h.path, d.data_in(rest)))
        })
    });

    g.bench_function("parse_grape_reply", |b| {
        b.iter(|| {
            let r = parse_response::<16>(black_box(GRAPE_REPLY));
            match r {
                Ok(Status::Complete((h, n))) => black_box((h.code, h.body, n)),
                _ => unreachable!(),
            }
        })
    });

    let mut out = [0u8; 256];
    g.bench_function("write_grape_reply_head", |b| {
        let headers = [
            Header::new("Connection", b"keep-alive"),
            Header::new("Keep-Alive", b"timeout=5"),
        ];
        b.iter(|| {
            write_response_head(
                black_box(&mut out),
                200,
                None,
                black_box(&headers),
                BodyKind::Length(18),
            )
            .unwrap()
        })
    });
    g.finish();

    // A 4 KiB chunked body in 256-byte chunks, decoded at once.
    let mut chunked = Vec::new();
    for _ in 0..16 {
        chunked.extend_from_slice(b"100\r\n");
        chunked.extend_from_slice(&[b'x'; 256]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("http_body");
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("chunked_4k", |b| {
        b.iter(|| {
            let mut dec = BodyDecoder::new(BodyKind::Chunked, 1 << 20).unwrap();
            let mut input = black_box(&chunked[..]);
            let mut total = 0;
            while !input.is_empty() {
                let d = dec.decode(input).unwrap();
                total += d.data.len();
                input = &input[d.consumed..];
                if d.done {
                    break;
                }
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_http);
criterion_main!(benches);
