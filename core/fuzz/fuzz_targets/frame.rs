//! Grenache RPC request frames: never panic, agree with `json::validate`, and what parses (or
//! gets the malformed-request reply) is answered with the reply a Node client reads.
#![no_main]

use grenache_core::wire::frame::{self, FrameError, Malformed, Request};
use grenache_core::wire::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let valid = json::validate(data).is_ok();
    let request = Request::parse(data);
    assert_eq!(request == Err(FrameError::NotJson), !valid);

    let mut out = vec![0u8; data.len() + 64];
    match request {
        Ok(r) => {
            let mut key = [0u8; 256];
            let _ = r.key.decode(&mut key);
            let n = frame::write_reply_ok(&mut out, r.rid, r.payload).expect("room");
            assert_eq!(out[..n], [b"[", r.rid, b",null,", r.payload, b"]"].concat());
            assert!(json::validate(&out[..n]).is_ok(), "own reply is JSON");
        }
        Err(e) => {
            if let Malformed::Reply { rid, message } = frame::on_malformed(data, e) {
                assert_eq!(e, FrameError::Shape);
                let n = frame::write_reply_err(&mut out, rid, message).expect("room");
                assert!(json::validate(&out[..n]).is_ok(), "own reply is JSON");
                assert!(out[..n].starts_with(&[b"[", rid, b","].concat()));
            }
        }
    }
});
