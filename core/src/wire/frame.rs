//! Grenache RPC frames and the grape HTTP envelope.
//!
//! Every Grenache RPC message, over WebSocket and over HTTP, is one JSON array
//! (docs/protocol.md §9.2, §10.1, §10.2):
//!
//! * request, client → server: `[rid, key, payload]`, e.g.
//!   `["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world"}]`;
//! * reply, server → client: `[rid, err, result]`, e.g. `["r1",null,"world"]` or
//!   `["r4","boom","partial"]`.
//!
//! Link talks to the grape's HTTP API with the envelope `{"rid":"<uuid>","data":<payload>}`
//! ([`Envelope`], docs/protocol.md §3.2).
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
//! "Drop" means: send nothing. On WebSocket keep the connection (Node does); on HTTP, where
//! Node leaves the request hanging, closing the connection without a response is compatible
//! (docs/protocol.md §8.2). The rid is echoed byte for byte with its JSON type (a number stays a number).
//!
//! # What a client does with a malformed reply
//!
//! Node's client runs `const [rid, _err, res] = data`; a truthy `_err` becomes
//! `new Error(String(_err))` (docs/protocol.md §8.3). [`Reply::parse`] mirrors that without the crashes:
//!
//! | reply bytes | Node client | [`Reply::parse`] |
//! |---|---|---|
//! | not JSON | WS ignores it, HTTP `ERR_REPLY_EMPTY` | [`FrameError::NotJson`] |
//! | `null` | WS ignores it, HTTP `ERR_REPLY_EMPTY` | [`FrameError::NotArray`] |
//! | `5`, `true`, `{}` | `TypeError: data is not iterable`: the process dies | [`FrameError::NotArray`] |
//! | `"str"` | iterable: rid `'s'` matches nothing, ignored | [`FrameError::NotArray`] |
//! | `[]` | rid `undefined` matches nothing | [`FrameError::Shape`] |
//! | `[rid]`, `[rid, err]` | missing items are `undefined` | accepted: no error, result `null` |
//! | falsy err: `null`, `false`, `0`, `""` | success | `err: None` |
//! | truthy err | `Error(String(err))` | `err: Some(raw)` (usually a string) |
//!
//! A Rust client over HTTP maps `NotJson`/`NotArray` to `ERR_REPLY_EMPTY` for parity; over
//! WebSocket it ignores the frame.

use core::fmt;

use crate::wire::json::{self, JsonError, JsonStr, Kind, Writer};

/// Why a frame was rejected or could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The bytes are not one JSON value (RFC 8259, UTF-8, nesting within
    /// [`json::MAX_DEPTH`]).
    NotJson,
    /// Valid JSON, but not an array (for [`Envelope`]: not used, see [`Envelope::parse`]).
    NotArray,
    /// An array (or envelope) whose items do not have the required types.
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

/// A reply frame `[rid, err, result]`, borrowed from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reply<'a> {
    /// The rid as raw JSON, as the server echoed it (match it against what was sent).
    pub rid: &'a [u8],
    /// The error as raw JSON when it is truthy in JavaScript terms (Node's client treats
    /// `null`, `false`, `0` and `""` as success); normally a string, see [`Reply::err_str`].
    pub err: Option<&'a [u8]>,
    /// The result as raw JSON (`null` when absent). Node delivers it even with an error.
    pub result: &'a [u8],
}

impl<'a> Reply<'a> {
    /// Parses a reply frame; see the module documentation for every rejected case.
    pub fn parse(buf: &'a [u8]) -> Result<Reply<'a>, FrameError> {
        let items = items(buf)?;
        let [rid, err, result] = items.first;
        let rid = rid.ok_or(FrameError::Shape)?;
        Ok(Reply {
            rid,
            err: err.filter(|e| truthy(e)),
            result: result.unwrap_or(NULL),
        })
    }

    /// The error message when the error is a JSON string (the only kind Node servers send).
    pub fn err_str(&self) -> Option<JsonStr<'a>> {
        self.err.and_then(JsonStr::new)
    }
}

/// JavaScript truthiness of a checked raw value.
///
/// A number is falsy when every mantissa digit is 0. (A literal such as `1e-400`, which
/// JavaScript rounds to 0, counts as truthy here: no Grenache peer sends one.)
fn truthy(raw: &[u8]) -> bool {
    let t = json::trim(raw);
    match json::kind(t) {
        Some(Kind::Null) | None => false,
        Some(Kind::Bool) => t.first() == Some(&b't'),
        Some(Kind::String) => t != b"\"\"",
        Some(Kind::Number) => t
            .iter()
            .take_while(|&&b| b != b'e' && b != b'E')
            .any(|&b| matches!(b, b'1'..=b'9')),
        Some(Kind::Array | Kind::Object) => true,
    }
}

/// Writes the request `[rid,key,payload]` at the start of `out`; returns its length.
///
/// `rid_raw` and `payload_raw` are raw JSON values (e.g. a uuid written with
/// [`json::write_str`], a payload from another frame); they are copied verbatim and must be
/// valid JSON, or the peer will not parse the frame.
pub fn write_request(
    out: &mut [u8],
    rid_raw: &[u8],
    key: &str,
    payload_raw: &[u8],
) -> Result<usize, FrameError> {
    let mut w = Writer::new(out);
    w.raw(b"[")?;
    w.raw(rid_raw)?;
    w.raw(b",")?;
    w.string(key)?;
    w.raw(b",")?;
    w.raw(payload_raw)?;
    w.raw(b"]")?;
    Ok(w.len())
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

/// The body of a request to the grape HTTP API: `{"rid":"<uuid>","data":<payload>}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Envelope<'a> {
    /// The `data` member as raw JSON, `None` when absent (JavaScript `undefined`).
    pub data: Option<&'a [u8]>,
    /// The `rid` member as raw JSON, `None` when absent. Grape ignores it.
    pub rid: Option<&'a [u8]>,
}

impl<'a> Envelope<'a> {
    /// Parses a grape HTTP API body the way Grape 1.0.0 reads it (`JSON.parse`, then
    /// `msg.data`; docs/protocol.md §3.4):
    ///
    /// * not JSON (including an empty body) → [`FrameError::NotJson`]; Grape answers 500
    ///   `ERR_GRAPE_PAYLOAD_INVALID`;
    /// * `null` → [`FrameError::Shape`]; Grape throws reading `null.data` and answers 500
    ///   `Cannot read properties of null (reading 'data')`;
    /// * any other non-object (`5`, `"x"`, `[1]`) has no members: `data` and `rid` are `None`
    ///   (Grape then answers e.g. `"ERR_GRAPE_LOOKUP"`);
    /// * an object: its members, in any order; with duplicate keys the last one wins.
    pub fn parse(body: &'a [u8]) -> Result<Envelope<'a>, FrameError> {
        let mut env = Envelope {
            data: None,
            rid: None,
        };
        match json::kind(body) {
            Some(Kind::Object) => {}
            _ => {
                json::validate(body).map_err(|_| FrameError::NotJson)?;
                return if json::kind(body) == Some(Kind::Null) {
                    Err(FrameError::Shape)
                } else {
                    Ok(env)
                };
            }
        }
        let mut it = json::object(body).map_err(|_| FrameError::NotJson)?;
        for member in it.by_ref() {
            let (k, v) = member.map_err(|_| FrameError::NotJson)?;
            if json::str_eq(k, "data") {
                env.data = Some(v);
            } else if json::str_eq(k, "rid") {
                env.rid = Some(v);
            }
        }
        if !json::trim(it.rest()).is_empty() {
            return Err(FrameError::NotJson);
        }
        Ok(env)
    }

    /// Writes `{"rid":"<rid>","data":<data>}` at the start of `out`, in the key order
    /// grenache-nodejs-link 1.0.2 sends (docs/protocol.md §7.1); returns its length.
    ///
    /// `data_raw` is copied verbatim and must be one valid JSON value.
    pub fn write(out: &mut [u8], data_raw: &[u8], rid: &str) -> Result<usize, FrameError> {
        let mut w = Writer::new(out);
        w.raw(b"{\"rid\":")?;
        w.string(rid)?;
        w.raw(b",\"data\":")?;
        w.raw(data_raw)?;
        w.raw(b"}")?;
        Ok(w.len())
    }
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
    fn ws_request_from_node_parses_and_rewrites_identically() {
        let wire = br#"["5f3ccf96-1f02-4c32-9c49-0c17e0583c92","rpc_test",{"hello":"world"}]"#;
        let r = req(wire).unwrap();
        assert_eq!(r.rid, br#""5f3ccf96-1f02-4c32-9c49-0c17e0583c92""#);
        assert_eq!(r.key.borrowed(), Some("rpc_test"));
        assert_eq!(r.payload, br#"{"hello":"world"}"#);
        let mut out = [0u8; 128];
        let n = write_request(&mut out, r.rid, "rpc_test", r.payload).unwrap();
        assert_eq!(&out[..n], &wire[..]);
    }

    #[test]
    fn http_request_body_from_node_is_69_bytes() {
        let mut rid = [0u8; 40];
        let m = json::write_str(&mut rid, "55e171ac-0872-453a-b0c4-3d73b418477a").unwrap();
        let mut out = [0u8; 128];
        let n = write_request(&mut out, &rid[..m], "rpc_test", br#"{"hello":"world"}"#).unwrap();
        assert_eq!(n, 69);
        assert_eq!(
            &out[..n],
            br#"["55e171ac-0872-453a-b0c4-3d73b418477a","rpc_test",{"hello":"world"}]"#
        );
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
    fn replies_from_node_parse() {
        let r = Reply::parse(br#"["r1",null,"world"]"#).unwrap();
        assert_eq!(
            r,
            Reply {
                rid: br#""r1""#,
                err: None,
                result: br#""world""#
            }
        );
        let r = Reply::parse(br#"["r4","boom","partial"]"#).unwrap();
        assert_eq!(r.err, Some(&br#""boom""#[..]));
        assert!(r.err_str().unwrap().eq_str("boom"));
        assert_eq!(r.result, br#""partial""#);
        // Node's HTTP server answers a bad `_gr` header with spaces and a null rid (docs/protocol.md §10.2).
        let r = Reply::parse(br#"[null, "ERR_HEADER_PARSE_GR", null]"#).unwrap();
        assert_eq!(r.rid, b"null");
        assert_eq!(r.err_str().unwrap().borrowed(), Some("ERR_HEADER_PARSE_GR"));
        assert_eq!(r.result, b"null");
    }

    #[test]
    fn gr_header_and_spaced_bodies_parse() {
        // The `_gr` header of a streaming request is `[rid,key]` (docs/protocol.md §10.6).
        let r = req(br#"["372c5f4a-c39f-42b6-9356-09b5590ae886","rpc_test"]"#).unwrap();
        assert!(r.key.eq_str("rpc_test"));
        assert_eq!(r.payload, b"null");
        // The buffered-stream test body of grenache-nodejs-http has spaces (docs/protocol.md §10.6).
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
            let reply = Reply::parse(&out[..n]).unwrap();
            assert_eq!(reply.rid, rid);
            assert!(reply.err_str().unwrap().eq_str("ERR_REQUEST_MALFORMED"));
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

    // ---- replies: Node's truthiness of `err` and missing items

    #[test]
    fn falsy_errors_mean_success() {
        for err in ["null", "false", "0", "-0", "0.0", "0e5", "-0.00E-7", "\"\""] {
            let buf = std::format!("[\"r\",{err},1]");
            let r = Reply::parse(buf.as_bytes()).unwrap();
            assert_eq!(r.err, None, "{err}");
            assert_eq!(r.result, b"1");
        }
    }

    #[test]
    fn truthy_errors_are_kept_raw() {
        for err in ["\"boom\"", "true", "1", "-0.5", "1e-5", "{}", "[]", "\" \""] {
            let buf = std::format!("[\"r\",{err},null]");
            let r = Reply::parse(buf.as_bytes()).unwrap();
            assert_eq!(r.err, Some(err.as_bytes()), "{err}");
        }
        let r = Reply::parse(br#"["r",{"m":1},null]"#).unwrap();
        assert_eq!(r.err_str(), None);
    }

    #[test]
    fn short_replies_default_like_javascript() {
        let r = Reply::parse(br#"["r"]"#).unwrap();
        assert_eq!((r.err, r.result), (None, &b"null"[..]));
        let r = Reply::parse(br#"["r","e"]"#).unwrap();
        assert_eq!((r.err, r.result), (Some(&br#""e""#[..]), &b"null"[..]));
        let r = Reply::parse(br#"["r",null,2,3,4]"#).unwrap();
        assert_eq!(r.result, b"2");
    }

    #[test]
    fn bad_replies_are_rejected() {
        assert_eq!(Reply::parse(b""), Err(FrameError::NotJson));
        assert_eq!(Reply::parse(b"oops"), Err(FrameError::NotJson));
        assert_eq!(Reply::parse(b"null"), Err(FrameError::NotArray));
        assert_eq!(Reply::parse(b"5"), Err(FrameError::NotArray));
        assert_eq!(Reply::parse(b"{\"a\":1}"), Err(FrameError::NotArray));
        assert_eq!(Reply::parse(b"\"str\""), Err(FrameError::NotArray));
        assert_eq!(Reply::parse(b"[]"), Err(FrameError::Shape));
        assert_eq!(Reply::parse(b"[\"r\",null,1"), Err(FrameError::NotJson));
    }

    // ---- writers: buffer bounds

    #[test]
    fn writers_report_a_short_buffer() {
        let full = br#"["r1","rpc_test",{"a":1}]"#;
        for len in 0..full.len() {
            let mut out = std::vec![0u8; len];
            assert_eq!(
                write_request(&mut out, br#""r1""#, "rpc_test", br#"{"a":1}"#),
                Err(FrameError::BufferTooSmall)
            );
        }
        let mut out = std::vec![0u8; full.len()];
        assert_eq!(
            write_request(&mut out, br#""r1""#, "rpc_test", br#"{"a":1}"#),
            Ok(full.len())
        );
        let mut out = [0u8; 10];
        assert_eq!(
            write_reply_err(&mut out, br#""r1""#, "boom"),
            Err(FrameError::BufferTooSmall)
        );
        assert_eq!(
            Envelope::write(&mut out, b"1", "rid"),
            Err(FrameError::BufferTooSmall)
        );
    }

    // ---- the grape HTTP envelope

    #[test]
    fn link_envelope_is_written_in_links_key_order() {
        let mut out = [0u8; 128];
        let n = Envelope::write(
            &mut out,
            br#""rpc_test""#,
            "71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1",
        )
        .unwrap();
        // Content-Length: 64 in the capture of docs/protocol.md §7.1.
        assert_eq!(n, 64);
        assert_eq!(
            &out[..n],
            br#"{"rid":"71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1","data":"rpc_test"}"#
        );
        let n = Envelope::write(&mut out, br#"["rpc_test",1337]"#, "x").unwrap();
        assert_eq!(&out[..n], br#"{"rid":"x","data":["rpc_test",1337]}"#);
        let e = Envelope::parse(&out[..n]).unwrap();
        assert_eq!(e.data, Some(&br#"["rpc_test",1337]"#[..]));
        assert_eq!(e.rid, Some(&br#""x""#[..]));
    }

    #[test]
    fn grape_bodies_from_the_curl_examples() {
        // docs/protocol.md §3.10.
        let e = Envelope::parse(br#"{"data":["rest:util:net",1337],"rid":"abc"}"#).unwrap();
        assert_eq!(e.data, Some(&br#"["rest:util:net",1337]"#[..]));
        assert_eq!(e.rid, Some(&br#""abc""#[..]));
        let e = Envelope::parse(br#"{"data":"rest:util:net","rid":"abc"}"#).unwrap();
        assert!(json::str_eq(e.data.unwrap(), "rest:util:net"));
        assert_eq!(
            Envelope::parse(b"{}"),
            Ok(Envelope {
                data: None,
                rid: None
            })
        );
        let e = Envelope::parse(br#"{"data":"x"}"#).unwrap();
        assert_eq!((e.data, e.rid), (Some(&br#""x""#[..]), None));
        let e = Envelope::parse(br#"{"data":{"v":"hello world"},"rid":"x"}"#).unwrap();
        assert_eq!(e.data, Some(&br#"{"v":"hello world"}"#[..]));
        let e = Envelope::parse(
            br#"{"data":{"hash":"6d33adc2b6b2c14c3036feefb7fedbca1a880527","cache":false}}"#,
        )
        .unwrap();
        assert_eq!(
            json::get(e.data.unwrap(), "cache").unwrap(),
            Some(&b"false"[..])
        );
        // 500 ERR_GRAPE_PAYLOAD_INVALID.
        assert_eq!(Envelope::parse(b"garbage"), Err(FrameError::NotJson));
        assert_eq!(Envelope::parse(b""), Err(FrameError::NotJson));
        assert_eq!(Envelope::parse(b"{\"data\":1"), Err(FrameError::NotJson));
        assert_eq!(Envelope::parse(b"{\"data\":1} x"), Err(FrameError::NotJson));
        // 500 "Cannot read properties of null (reading 'data')".
        assert_eq!(Envelope::parse(b" null "), Err(FrameError::Shape));
        // Other non-objects have no `data`: Grape answers its per-endpoint error.
        for body in [&b"5"[..], b"\"x\"", b"[1]", b"true"] {
            assert_eq!(
                Envelope::parse(body),
                Ok(Envelope {
                    data: None,
                    rid: None
                })
            );
        }
    }

    #[test]
    fn envelope_keys_any_order_last_duplicate_wins_escapes_decoded() {
        let e = Envelope::parse(br#"{"x":1,"d\u0061ta":1,"rid":2,"data":3,"rid":null}"#).unwrap();
        assert_eq!(e.data, Some(&b"3"[..]));
        assert_eq!(e.rid, Some(&b"null"[..]));
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
        fn request_roundtrip(rid in arb_rid(), key in any::<String>(), payload in arb_value()) {
            let rid_raw = serde_json::to_vec(&rid).unwrap();
            let payload_raw = serde_json::to_vec(&payload).unwrap();
            let mut out = std::vec![0u8; rid_raw.len() + key.len() * 6 + payload_raw.len() + 8];
            let n = write_request(&mut out, &rid_raw, &key, &payload_raw).unwrap();
            let frame = &out[..n];
            // Compact, as JSON.stringify([rid, key, payload]) (serde_json stands in for it).
            let want = serde_json::to_vec(&serde_json::json!([rid, key, payload])).unwrap();
            prop_assert_eq!(frame, &want[..]);
            let r = Request::parse(frame).unwrap();
            prop_assert_eq!(r.rid, &rid_raw[..]);
            prop_assert_eq!(r.payload, &payload_raw[..]);
            prop_assert!(r.key.eq_str(&key));
            let mut buf = std::vec![0u8; key.len()];
            prop_assert_eq!(r.key.decode(&mut buf), Ok(key.as_str()));
        }

        #[test]
        fn reply_roundtrip(
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
            let r = Reply::parse(&out[..n]).unwrap();
            prop_assert_eq!(r.rid, &rid_raw[..]);
            prop_assert_eq!(r.result, &result_raw[..]);
            match &err {
                Some(e) => prop_assert!(r.err_str().unwrap().eq_str(e)),
                None => prop_assert_eq!(r.err, None),
            }
        }

        #[test]
        fn envelope_roundtrip(rid in any::<String>(), data in arb_value()) {
            let data_raw = serde_json::to_vec(&data).unwrap();
            let mut out = std::vec![0u8; rid.len() * 6 + data_raw.len() + 20];
            let n = Envelope::write(&mut out, &data_raw, &rid).unwrap();
            // serde_json's map is sorted, so build the expected text by hand in Link's order.
            let want = std::format!(
                "{{\"rid\":{},\"data\":{}}}",
                serde_json::to_string(&rid).unwrap(),
                serde_json::to_string(&data).unwrap()
            );
            prop_assert_eq!(&out[..n], want.as_bytes());
            let e = Envelope::parse(&out[..n]).unwrap();
            prop_assert_eq!(e.data, Some(&data_raw[..]));
            prop_assert!(json::str_eq(e.rid.unwrap(), &rid));
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

    /// The frame parsers agree with `json::validate` about what is JSON, and what they accept
    /// can be written back.
    fn check_consistency(text: &[u8]) -> Result<(), TestCaseError> {
        let valid = json::validate(text).is_ok();
        for result in [
            Request::parse(text).map(|_| ()),
            Reply::parse(text).map(|_| ()),
            Envelope::parse(text).map(|_| ()),
        ] {
            prop_assert_eq!(result == Err(FrameError::NotJson), !valid);
        }
        match Request::parse(text) {
            Ok(r) => {
                let mut out: Vec<u8> = std::vec![0u8; text.len() + 16];
                let n = write_reply_ok(&mut out, r.rid, r.payload).unwrap();
                let back = Reply::parse(&out[..n]).unwrap();
                prop_assert_eq!(back.rid, r.rid);
                prop_assert_eq!(back.result, r.payload);
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
