//! Grenache RPC frames: reading requests and writing replies, as a worker does.
//!
//! Every Grenache RPC message, over WebSocket and over HTTP, is one JSON array
//! (docs/protocol.md §9.2, §10.1, §10.2):
//!
//! * request, client → server: `[rid, key, payload]`, e.g.
//!   `["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world"}]`;
//! * reply, server → client: `[rid, err, result]`, e.g. `["r1",null,"world"]` or
//!   `["r4","boom","partial"]`.
//!
//! Payloads, results and rids stay opaque: the parsers return raw JSON slices of the input,
//! checked for syntax, and the writers copy raw slices verbatim. The writers emit what Node's
//! `JSON.stringify` emits for the same values (no spaces), so a raw slice that came from a
//! Node peer is sent back byte for byte.
//!
//! # What a server does with a malformed request
//!
//! [`Request::parse`] and then [`on_malformed`] decide; docs/protocol.md §8.2 says
//! what Node does. **R** = reproduced, **F** = deliberately fixed (still interoperable).
//!
//! | request bytes | Node server (ws 1.0.0 / http 1.0.2) | here |
//! |---|---|---|
//! | not JSON (also empty, invalid UTF-8, trailing garbage) | `JSON.parse` fails, `'request-error'`, no reply | [`FrameError::NotJson`] → [`Malformed::Drop`] (R) |
//! | falsy JSON: `null`, `false`, `0`, `""` | `if (!data)`: no reply | [`FrameError::NotArray`] → drop (R) |
//! | other non-array JSON: `5`, `true`, `{}`, `"str"` | runs the handler with `rid = data[0]` (`undefined`, or `'s'` for `"str"`); the reply cannot match any request | [`FrameError::NotArray`] → drop (F) |
//! | `[]`, or a rid that is not a string or number (`[null,"k",1]`) | runs the handler, echoes the useless rid | [`FrameError::Shape`] → drop (F) |
//! | string/number rid, key missing or not a string (`["r1"]`, `["r1",5,{}]`) | runs the handler with that key | [`FrameError::Shape`] → reply `[rid,"ERR_REQUEST_MALFORMED",null]` (F: the client gets an error instead of waiting for its timeout) |
//! | `[rid, key]` (no payload) | payload `undefined` | accepted, payload `null` (R) |
//! | more than 3 elements | extra elements ignored | accepted, extras ignored (they must still be valid JSON) (R) |
//! | whitespace anywhere JSON allows it | accepted | accepted (R) |
//! | nesting deeper than [`json::MAX_DEPTH`] | accepted | [`FrameError::NotJson`] → drop (F: bounded scanner) |
//!
//! "Drop" means: send nothing. On WebSocket keep the connection (Node does); on HTTP, where Node
//! leaves the request hanging, closing the connection without a response is compatible
//! (docs/protocol.md §8.2). The rid is echoed byte for byte with its JSON type (a number stays a
//! number).

use core::fmt;

use crate::wire::json::{self, JsonError, JsonStr, Kind, Writer};

/// Why a frame was rejected or could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The bytes are not one JSON value (RFC 8259, UTF-8, nesting within
    /// [`json::MAX_DEPTH`]).
    NotJson,
    /// Valid JSON, but not an array.
    NotArray,
    /// An array whose items do not have the required types.
    Shape,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::NotJson => "frame is not JSON",
            FrameError::NotArray => "frame is not a JSON array",
            FrameError::Shape => "frame items have the wrong types",
            FrameError::BufferTooSmall => "output buffer too small",
        })
    }
}

impl core::error::Error for FrameError {}

impl From<JsonError> for FrameError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::BufferTooSmall => FrameError::BufferTooSmall,
            _ => FrameError::NotJson,
        }
    }
}

/// The error message a server replies with to a request whose rid can be read but whose key
/// cannot (see the module documentation). Node has no such check, so the string is ours.
pub const ERR_REQUEST_MALFORMED: &str = "ERR_REQUEST_MALFORMED";

/// What stands for an absent payload or result: `JSON.stringify` turns `undefined` in an
/// array into `null`.
const NULL: &[u8] = b"null";

/// The first three items of a JSON array frame and how many items it has in all.
struct Items<'a> {
    count: usize,
    first: [Option<&'a [u8]>; 3],
}

/// Walks the whole frame once: checks it is exactly one JSON array and keeps its first three
/// items. Non-array input is checked too, to tell `NotJson` from `NotArray`.
fn items(buf: &[u8]) -> Result<Items<'_>, FrameError> {
    if json::kind(buf) != Some(Kind::Array) {
        json::validate(buf).map_err(|_| FrameError::NotJson)?;
        return Err(FrameError::NotArray);
    }
    let mut it = json::array(buf).map_err(|_| FrameError::NotJson)?;
    let mut out = Items {
        count: 0,
        first: [None; 3],
    };
    for item in it.by_ref() {
        let item = item.map_err(|_| FrameError::NotJson)?;
        if let Some(slot) = out.first.get_mut(out.count) {
            *slot = Some(item);
        }
        out.count = out.count.saturating_add(1);
    }
    if !json::trim(it.rest()).is_empty() {
        return Err(FrameError::NotJson);
    }
    Ok(out)
}

/// Whether a rid can be echoed: Grenache clients send strings (uuids), the protocol allows
/// numbers too.
fn is_rid(raw: &[u8]) -> bool {
    matches!(json::kind(raw), Some(Kind::String | Kind::Number))
}

/// A request frame `[rid, key, payload]`, borrowed from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// The request id as raw JSON (a string or a number), to be echoed verbatim in the reply.
    pub rid: &'a [u8],
    /// The service name the client looked up.
    pub key: JsonStr<'a>,
    /// The payload as raw JSON (`null` when the client sent only `[rid, key]`).
    pub payload: &'a [u8],
}

impl<'a> Request<'a> {
    /// Parses a request frame; see the module documentation for every rejected case, and
    /// [`on_malformed`] for what to answer.
    pub fn parse(buf: &'a [u8]) -> Result<Request<'a>, FrameError> {
        let items = items(buf)?;
        let [rid, key, payload] = items.first;
        let rid = rid.filter(|r| is_rid(r)).ok_or(FrameError::Shape)?;
        let key = key.and_then(JsonStr::new).ok_or(FrameError::Shape)?;
        Ok(Request {
            rid,
            key,
            payload: payload.unwrap_or(NULL),
        })
    }
}

/// What a server does with a request that [`Request::parse`] rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Malformed<'a> {
    /// Send nothing (on HTTP: close the connection without a response).
    Drop,
    /// Answer `[rid, message, null]` ([`write_reply_err`]).
    Reply {
        /// The rid to echo, raw.
        rid: &'a [u8],
        /// The error message.
        message: &'static str,
    },
}

/// What a server does with the request `buf` that [`Request::parse`] rejected with `err`, per
/// docs/protocol.md §8.2: answer with an error frame when a rid can be recovered from a
/// well-formed JSON array, otherwise drop (the module documentation has the full table).
pub fn on_malformed(buf: &[u8], err: FrameError) -> Malformed<'_> {
    if err != FrameError::Shape {
        return Malformed::Drop;
    }
    match items(buf) {
        Ok(Items {
            first: [Some(rid), ..],
            ..
        }) if is_rid(rid) => Malformed::Reply {
            rid,
            message: ERR_REQUEST_MALFORMED,
        },
        _ => Malformed::Drop,
    }
}

/// Writes the reply `[rid,err,result]`: `err` as a JSON string or `null`.
///
/// Node's client treats an empty error string as success, like Node's server would send it
/// for `new Error('')`; pass a non-empty message to signal an error.
pub fn write_reply(
    out: &mut [u8],
    rid_raw: &[u8],
    err: Option<&str>,
    result_raw: &[u8],
) -> Result<usize, FrameError> {
    let mut w = Writer::new(out);
    w.raw(b"[")?;
    w.raw(rid_raw)?;
    w.raw(b",")?;
    match err {
        Some(msg) => w.string(msg)?,
        None => w.raw(NULL)?,
    }
    w.raw(b",")?;
    w.raw(result_raw)?;
    w.raw(b"]")?;
    Ok(w.len())
}

/// Writes the success reply `[rid,null,result]`.
pub fn write_reply_ok(
    out: &mut [u8],
    rid_raw: &[u8],
    result_raw: &[u8],
) -> Result<usize, FrameError> {
    write_reply(out, rid_raw, None, result_raw)
}

/// Writes the error reply `[rid,"msg",null]`, as Node's `handler.reply(new Error(msg))`.
pub fn write_reply_err(out: &mut [u8], rid_raw: &[u8], msg: &str) -> Result<usize, FrameError> {
    write_reply(out, rid_raw, Some(msg), NULL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json::tests::{apply, arb_edit, arb_value};
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    fn req(buf: &[u8]) -> Result<Request<'_>, FrameError> {
        Request::parse(buf)
    }

    // ---- golden frames from docs/protocol.md §9.2 and §10.1-10.2 (bytes observed from Node)

    #[test]
    fn ws_request_from_node_parses() {
        let wire = br#"["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world"}]"#;
        let r = req(wire).unwrap();
        assert_eq!(r.rid, br#""5f3ccf96-1f02-4c32-9c49-0c17e0583c92""#);
        assert_eq!(r.key.borrowed(), Some("rpc_test"));
        assert_eq!(r.payload, br#"{"hello":"world"}"#);
    }

    #[test]
    fn replies_from_node_are_written_byte_for_byte() {
        let mut out = [0u8; 64];
        let n = write_reply_ok(&mut out, br#""r1""#, br#""world""#).unwrap();
        assert_eq!(&out[..n], br#"["r1",null,"world"]"#);
        let n = write_reply(&mut out, br#""r4""#, Some("boom"), br#""partial""#).unwrap();
        assert_eq!(&out[..n], br#"["r4","boom","partial"]"#);
        // The chunked HTTP reply of docs/protocol.md §10.2: chunk size 0x17.
        let n = write_reply_ok(&mut out, br#""r1""#, br#"{"ok":"hi"}"#).unwrap();
        assert_eq!(&out[..n], br#"["r1",null,{"ok":"hi"}]"#);
        assert_eq!(n, 0x17);
        let n = write_reply_err(&mut out, br#""r2""#, "boom").unwrap();
        assert_eq!(&out[..n], br#"["r2","boom",null]"#);
        let n = write_reply_ok(&mut out, br#""r3""#, br#""x""#).unwrap();
        assert_eq!(&out[..n], br#"["r3",null,"x"]"#);
        // A number rid stays a number.
        let n = write_reply_ok(&mut out, b"42", b"null").unwrap();
        assert_eq!(&out[..n], b"[42,null,null]");
        // Error messages are escaped as JSON.stringify does.
        let n = write_reply_err(&mut out, br#""r5""#, "bad \"key\"\n").unwrap();
        assert_eq!(&out[..n], br#"["r5","bad \"key\"\n",null]"#);
    }

    #[test]
    fn gr_header_and_spaced_bodies_parse() {
        // The `_gr` header of a streaming request is `[rid,key]` (docs/protocol.md §10.6).
        let r = req(br#"["372c5f4a-c39f-42b6-9356-09b5590ae886","rpc_test"]"#).unwrap();
        assert!(r.key.eq_str("rpc_test"));
        assert_eq!(r.payload, b"null");
        // The buffered-stream test body of grenache-nodejs-http has spaces
        // (docs/protocol.md §10.6).
        let r = req(br#"["UUID", "rpc_buf", "hello"]"#).unwrap();
        assert_eq!(r.rid, br#""UUID""#);
        assert!(r.key.eq_str("rpc_buf"));
        assert_eq!(r.payload, br#""hello""#);
        let r = req(b" \r\n[ 7 ,\t\"k\" , [ 1 ] ] \n").unwrap();
        assert_eq!((r.rid, r.payload), (&b"7"[..], &b"[ 1 ]"[..]));
    }

    #[test]
    fn escaped_keys_are_decoded_on_request() {
        let r = req(br#"["r","rpc\u005ftest\n",1]"#).unwrap();
        assert_eq!(r.key.borrowed(), None);
        assert!(r.key.eq_str("rpc_test\n"));
        let mut buf = [0u8; 16];
        assert_eq!(r.key.decode(&mut buf), Ok("rpc_test\n"));
    }

    // ---- the malformed-request table of the module documentation, row by row

    fn outcome(buf: &[u8]) -> Result<Request<'_>, Malformed<'_>> {
        req(buf).map_err(|e| on_malformed(buf, e))
    }

    #[test]
    fn unparseable_requests_are_dropped() {
        for buf in [
            &b""[..],
            b"   ",
            b"garbage",
            br#"["r1","k",{"a":1}"#,
            br#"["r1","k",1]x"#,
            br#"["r1","k",1] ["r2","k",1]"#,
            b"[\"r1\",\"k\",\"\xff\"]",
            b"\xef\xbb\xbf[\"r1\",\"k\",1]",
        ] {
            assert_eq!(req(buf), Err(FrameError::NotJson), "{buf:?}");
            assert_eq!(outcome(buf), Err(Malformed::Drop));
        }
    }

    #[test]
    fn non_array_json_is_dropped() {
        for buf in [
            &b"null"[..],
            b"false",
            b"0",
            b"\"\"",
            b"5",
            b"true",
            b"{}",
            br#"{"rid":"r1","key":"k"}"#,
            b"\"str\"",
        ] {
            assert_eq!(req(buf), Err(FrameError::NotArray), "{buf:?}");
            assert_eq!(outcome(buf), Err(Malformed::Drop));
        }
    }

    #[test]
    fn arrays_without_a_usable_rid_are_dropped() {
        for buf in [
            &b"[]"[..],
            br#"[null,"k",1]"#,
            br#"[true,"k",1]"#,
            br#"[{},"k",1]"#,
            br#"[["r"],"k",1]"#,
        ] {
            assert_eq!(req(buf), Err(FrameError::Shape), "{buf:?}");
            assert_eq!(outcome(buf), Err(Malformed::Drop));
        }
    }

    #[test]
    fn a_rid_without_a_usable_key_gets_an_error_reply() {
        for (buf, rid) in [
            (&br#"["r1"]"#[..], &br#""r1""#[..]),
            (br#"["r1",5,{}]"#, br#""r1""#),
            (br#"["r1",null,{}]"#, br#""r1""#),
            (br#"[12,["k"],{}]"#, b"12"),
            (br#"[-1.5e3,{"k":1}]"#, b"-1.5e3"),
        ] {
            assert_eq!(req(buf), Err(FrameError::Shape), "{buf:?}");
            let m = outcome(buf).unwrap_err();
            assert_eq!(
                m,
                Malformed::Reply {
                    rid,
                    message: ERR_REQUEST_MALFORMED
                }
            );
            let mut out = [0u8; 64];
            let n = write_reply_err(&mut out, rid, ERR_REQUEST_MALFORMED).unwrap();
            let want = [b"[", rid, br#","ERR_REQUEST_MALFORMED",null]"#].concat();
            assert_eq!(&out[..n], &want[..]);
        }
    }

    #[test]
    fn extra_elements_are_ignored_but_checked() {
        let r = req(br#"["r1","k",1,2,{"x":[3]}]"#).unwrap();
        assert_eq!(r.payload, b"1");
        assert_eq!(req(br#"["r1","k",1,2,{"x":[3}]"#), Err(FrameError::NotJson));
    }

    #[test]
    fn too_deep_payloads_are_unparseable() {
        let mut payload = String::new();
        for _ in 0..json::MAX_DEPTH - 1 {
            payload.push('[');
        }
        for _ in 0..json::MAX_DEPTH - 1 {
            payload.push(']');
        }
        let ok = std::format!("[\"r\",\"k\",{payload}]");
        assert!(req(ok.as_bytes()).is_ok());
        let deep = std::format!("[\"r\",\"k\",[{payload}]]");
        assert_eq!(req(deep.as_bytes()), Err(FrameError::NotJson));
        assert_eq!(outcome(deep.as_bytes()), Err(Malformed::Drop));
    }

    #[test]
    fn on_malformed_drops_for_other_errors() {
        // Whatever the bytes, only a Shape error can be answered.
        let buf = br#"["r1",5,{}]"#;
        for e in [
            FrameError::NotJson,
            FrameError::NotArray,
            FrameError::BufferTooSmall,
        ] {
            assert_eq!(on_malformed(buf, e), Malformed::Drop);
        }
    }

    // ---- writers: buffer bounds

    #[test]
    fn writers_report_a_short_buffer() {
        let full = br#"["r1",null,{"a":1}]"#;
        for len in 0..full.len() {
            let mut out = std::vec![0u8; len];
            assert_eq!(
                write_reply_ok(&mut out, br#""r1""#, br#"{"a":1}"#),
                Err(FrameError::BufferTooSmall)
            );
        }
        let mut out = std::vec![0u8; full.len()];
        assert_eq!(
            write_reply_ok(&mut out, br#""r1""#, br#"{"a":1}"#),
            Ok(full.len())
        );
        let mut out = [0u8; 10];
        assert_eq!(
            write_reply_err(&mut out, br#""r1""#, "boom"),
            Err(FrameError::BufferTooSmall)
        );
    }

    // ---- properties

    fn arb_rid() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<String>().prop_map(serde_json::Value::String),
            "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
                .prop_map(serde_json::Value::String),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u32>().prop_map(|n| serde_json::Value::from(f64::from(n) / 8.0)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn requests_parse(rid in arb_rid(), key in any::<String>(), payload in arb_value()) {
            let rid_raw = serde_json::to_vec(&rid).unwrap();
            let payload_raw = serde_json::to_vec(&payload).unwrap();
            // Compact, as JSON.stringify([rid, key, payload]) (serde_json stands in for it).
            let frame = serde_json::to_vec(&serde_json::json!([rid, key, payload])).unwrap();
            let r = Request::parse(&frame).unwrap();
            prop_assert_eq!(r.rid, &rid_raw[..]);
            prop_assert_eq!(r.payload, &payload_raw[..]);
            prop_assert!(r.key.eq_str(&key));
            let mut buf = std::vec![0u8; key.len()];
            prop_assert_eq!(r.key.decode(&mut buf), Ok(key.as_str()));
        }

        #[test]
        fn replies_are_written_as_json_stringify(
            rid in arb_rid(),
            err in proptest::option::of(".+"),
            result in arb_value(),
        ) {
            let rid_raw = serde_json::to_vec(&rid).unwrap();
            let result_raw = serde_json::to_vec(&result).unwrap();
            let err_len = err.as_ref().map_or(0, |e| e.len() * 6);
            let mut out = std::vec![0u8; rid_raw.len() + err_len + result_raw.len() + 10];
            let n = write_reply(&mut out, &rid_raw, err.as_deref(), &result_raw).unwrap();
            let want = serde_json::to_vec(&serde_json::json!([rid, err, result])).unwrap();
            prop_assert_eq!(&out[..n], &want[..]);
        }

        #[test]
        fn mutated_frames_never_panic_and_agree_with_validate(
            rid in arb_rid(),
            payload in arb_value(),
            edits in prop::collection::vec(arb_edit(), 0..4),
        ) {
            let mut text = serde_json::to_vec(&serde_json::json!([rid, "rpc_test", payload])).unwrap();
            apply(&mut text, &edits);
            check_consistency(&text)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..96)) {
            check_consistency(&text)?;
        }
    }

    /// The request parser agrees with `json::validate` about what is JSON, and what it accepts
    /// can be answered with a valid JSON reply.
    fn check_consistency(text: &[u8]) -> Result<(), TestCaseError> {
        let valid = json::validate(text).is_ok();
        prop_assert_eq!(
            Request::parse(text).err() == Some(FrameError::NotJson),
            !valid
        );
        match Request::parse(text) {
            Ok(r) => {
                let mut out: Vec<u8> = std::vec![0u8; text.len() + 16];
                let n = write_reply_ok(&mut out, r.rid, r.payload).unwrap();
                let want = [b"[", r.rid, b",null,", r.payload, b"]"].concat();
                prop_assert_eq!(&out[..n], &want[..]);
                prop_assert!(json::validate(&out[..n]).is_ok());
            }
            Err(e) => {
                if let Malformed::Reply { rid, .. } = on_malformed(text, e) {
                    prop_assert_eq!(e, FrameError::Shape);
                    prop_assert!(matches!(json::kind(rid), Some(Kind::String | Kind::Number)));
                }
            }
        }
        Ok(())
    }
}
