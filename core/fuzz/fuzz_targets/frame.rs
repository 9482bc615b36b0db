//! Grenache RPC frames and the grape envelope: never panic, agree with `json::validate`, and
//! what parses can be written and parsed back.
#![no_main]

use grenache_core::wire::frame::{self, Envelope, FrameError, Malformed, Reply, Request};
use grenache_core::wire::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let valid = json::validate(data).is_ok();
    let request = Request::parse(data);
    let reply = Reply::parse(data);
    let envelope = Envelope::parse(data);
    assert_eq!(request == Err(FrameError::NotJson), !valid);
    assert_eq!(reply == Err(FrameError::NotJson), !valid);
    assert_eq!(envelope == Err(FrameError::NotJson), !valid);

    let mut out = vec![0u8; data.len() + 64];
    match request {
        Ok(r) => {
            let mut key = [0u8; 256];
            let _ = r.key.decode(&mut key);
            let n = frame::write_reply_ok(&mut out, r.rid, r.payload).expect("room");
            let back = Reply::parse(&out[..n]).expect("own reply parses");
            assert_eq!((back.rid, back.err, back.result), (r.rid, None, r.payload));
        }
        Err(e) => {
            if let Malformed::Reply { rid, message } = frame::on_malformed(data, e) {
                assert_eq!(e, FrameError::Shape);
                let n = frame::write_reply_err(&mut out, rid, message).expect("room");
                let back = Reply::parse(&out[..n]).expect("own reply parses");
                assert_eq!(back.rid, rid);
            }
        }
    }
    if let Ok(r) = reply {
        let _ = r.err_str();
    }
    if let Ok(Envelope { data: Some(d), .. }) = envelope {
        let n = Envelope::write(&mut out, d, "rid").expect("room");
        let back = Envelope::parse(&out[..n]).expect("own envelope parses");
        assert_eq!(back.data, Some(d));
    }
});
