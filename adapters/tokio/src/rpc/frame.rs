//! The JSON frames of grenache-nodejs-base: requests `[rid, key, payload]` and replies
//! `[rid, err, result]`, read with the core's rules (core/src/wire/frame.rs).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::error::RpcError;
use crate::js::{string as js_string, truthy as js_truthy};
use grenache_core::wire::frame::{
    on_malformed, write_reply_err, FrameError, Malformed, Request as CoreRequest,
    ERR_REQUEST_MALFORMED,
};

/// `[rid, key, payload]` as `JSON.stringify` writes it.
pub(crate) fn encode_request(rid: &str, key: &str, payload: &Value) -> String {
    // Serialized in place (a tuple is a JSON array), not copied into a `json!` array first.
    // Writing JSON values and strings into a `String` cannot fail: the default is unreachable.
    serde_json::to_string(&(rid, key, payload)).unwrap_or_default()
}

/// What a worker does with a request frame that is not one: the verdict of
/// [`grenache_core::wire::frame::on_malformed`], so that the tokio workers, the embassy worker and
/// the core's table (core/src/wire/frame.rs) agree on every frame.
#[derive(Debug, PartialEq)]
pub(crate) enum BadRequest {
    /// Send nothing (WebSocket: keep the connection; HTTP: close it without a response).
    Drop(FrameError),
    /// Send this `[rid,"ERR_REQUEST_MALFORMED",null]` frame: the rid was readable, so the
    /// client gets an error instead of waiting for its timeout.
    Reply(String),
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::Drop(why) => write!(f, "{why} (dropped, no reply)"),
            BadRequest::Reply(_) => write!(f, "{ERR_REQUEST_MALFORMED} (rid echoed)"),
        }
    }
}

/// Reads a request frame with the core's rules ([`CoreRequest::parse`], then
/// [`on_malformed`]), and hands its parts over as the handler wants them: the rid and
/// payload as [`Value`]s, the key decoded. The core bounds nesting at
/// [`grenache_core::wire::json::MAX_DEPTH`] levels, frame included: a deeper frame is dropped.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<(Value, String, Value), BadRequest> {
    let request = match CoreRequest::parse(bytes) {
        Ok(request) => request,
        Err(err) => {
            return Err(match on_malformed(bytes, err) {
                Malformed::Drop => BadRequest::Drop(err),
                Malformed::Reply { rid, message } => {
                    // The rid is a checked JSON string or number and the message ASCII: the
                    // frame is JSON text, and UTF-8 because the rid came from checked input.
                    let mut out =
                        vec![0; rid.len().saturating_add(message.len()).saturating_add(16)];
                    match write_reply_err(&mut out, rid, message) {
                        Ok(len) => {
                            out.truncate(len);
                            match String::from_utf8(out) {
                                Ok(frame) => BadRequest::Reply(frame),
                                Err(_) => BadRequest::Drop(err),
                            }
                        }
                        Err(_) => BadRequest::Drop(err),
                    }
                }
            });
        }
    };
    // The core checked every slice; serde_json can still refuse what it cannot represent (a
    // number beyond f64, a lone surrogate escape). Those frames were dropped before the core
    // decided, and still are: there is no `Value` to hand the handler.
    let (Ok(rid), Ok(key), Ok(payload)) = (
        serde_json::from_slice::<Value>(request.rid),
        serde_json::from_slice::<String>(request.key.raw()),
        serde_json::from_slice::<Value>(request.payload),
    ) else {
        return Err(BadRequest::Drop(FrameError::NotJson));
    };
    Ok((rid, key, payload))
}

/// The key as a string: strings as they are, `null` as empty, anything else as JSON text.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `[rid, err, result]` for a handler's outcome. Always a 3-element array: anything else
/// crashes Node clients.
pub(crate) fn encode_reply(rid: &Value, outcome: &Result<Value, RpcError>) -> String {
    // As in `encode_request`, serialized in place; it cannot fail.
    match outcome {
        Ok(result) => serde_json::to_string(&(rid, (), result)),
        Err(error) => {
            let data = match error {
                RpcError::Remote { data, .. } => data,
                _ => &Value::Null,
            };
            serde_json::to_string(&(rid, error.wire_message(), data))
        }
    }
    .unwrap_or_default()
}

/// Reads a reply frame: `None` when it is not a JSON array (WS ignores those, HTTP turns them
/// into `ERR_REPLY_EMPTY`), else the rid (`None` unless it is a string: a client's rids are)
/// and the outcome. A truthy error slot is an error whose message is its JavaScript string
/// form; the result slot comes along as its data. Missing slots are `null`, slots past the
/// third are read and ignored.
///
/// Read with a visitor rather than through a `Value` array: a busy client reads a reply per
/// request, and the array and the rid's copy were a measurable part of it.
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<(ReplyRid<'_>, Result<Value, RpcError>)> {
    let ReplyFrame { rid, error, result } = serde_json::from_slice::<ReplyFrame<'_>>(bytes).ok()?;
    if js_truthy(&error) {
        Some((
            rid,
            Err(RpcError::Remote {
                message: js_string(&error),
                data: result,
            }),
        ))
    } else {
        Some((rid, Ok(result)))
    }
}

/// The rid of a reply: its text when it is a JSON string, borrowed from the frame unless it has
/// escapes; `None` for any other value.
pub(crate) type ReplyRid<'a> = Option<Cow<'a, str>>;

/// `[rid, err, result]` as [`decode_reply`] reads it.
struct ReplyFrame<'a> {
    rid: ReplyRid<'a>,
    error: Value,
    result: Value,
}

impl<'de> Deserialize<'de> for ReplyFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Slots;
        impl<'de> Visitor<'de> for Slots {
            type Value = ReplyFrame<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array [rid, err, result]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut frame = ReplyFrame {
                    rid: None,
                    error: Value::Null,
                    result: Value::Null,
                };
                let Some(RidSlot(rid)) = seq.next_element()? else {
                    return Ok(frame);
                };
                frame.rid = rid;
                let Some(error) = seq.next_element()? else {
                    return Ok(frame);
                };
                frame.error = error;
                let Some(result) = seq.next_element()? else {
                    return Ok(frame);
                };
                frame.result = result;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(frame)
            }
        }
        deserializer.deserialize_seq(Slots)
    }
}

/// The rid slot of a reply: its text, borrowed from the frame unless it has escapes, or
/// `None` for any other JSON value (which is read through and dropped).
struct RidSlot<'a>(ReplyRid<'a>);

impl<'de> Deserialize<'de> for RidSlot<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rid;
        impl<'de> Visitor<'de> for Rid {
            type Value = RidSlot<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(RidSlot(Some(Cow::Borrowed(text))))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(RidSlot(Some(Cow::Owned(text.to_owned()))))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(RidSlot(Some(Cow::Owned(text))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RidSlot(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RidSlot(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RidSlot(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RidSlot(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RidSlot(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RidSlot(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RidSlot(None))
            }
        }
        deserializer.deserialize_any(Rid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_frames_are_node_bytes() {
        let frame = encode_request("r1", "rpc_test", &json!({"hello": "world"}));
        assert_eq!(frame, r#"["r1","rpc_test",{"hello":"world"}]"#);
    }

    #[test]
    fn decode_request_follows_the_core_rules() {
        use BadRequest::{Drop, Reply};
        assert_eq!(
            decode_request(br#"["r",  "k", {"a":1}, "extra"]"#),
            Ok((json!("r"), "k".to_string(), json!({"a": 1})))
        );
        assert_eq!(
            decode_request(br#"[5,"k\u00e9"]"#),
            Ok((json!(5), "k\u{e9}".to_string(), Value::Null))
        );
        // A readable rid with a key that is not a string: answered, rid echoed as sent.
        let malformed = |rid: &str| Err(Reply(format!(r#"[{rid},"ERR_REQUEST_MALFORMED",null]"#)));
        assert_eq!(decode_request(b"[7]"), malformed("7"));
        assert_eq!(decode_request(br#"["r1",5,{}]"#), malformed(r#""r1""#));
        assert_eq!(decode_request(br#"["r1"]"#), malformed(r#""r1""#));
        // No rid to echo: dropped.
        assert_eq!(
            decode_request(br#"[null,"k",{}]"#),
            Err(Drop(FrameError::Shape))
        );
        assert_eq!(
            decode_request(br#"[{},"k",{}]"#),
            Err(Drop(FrameError::Shape))
        );
        assert_eq!(decode_request(b"[]"), Err(Drop(FrameError::Shape)));
        assert_eq!(decode_request(b"null"), Err(Drop(FrameError::NotArray)));
        assert_eq!(
            decode_request(b"{\"a\":1}"),
            Err(Drop(FrameError::NotArray))
        );
        assert_eq!(decode_request(b"5"), Err(Drop(FrameError::NotArray)));
        assert_eq!(decode_request(b"[1,"), Err(Drop(FrameError::NotJson)));
        assert_eq!(decode_request(b"\xff\xfe"), Err(Drop(FrameError::NotJson)));
        // What the core accepts but serde_json cannot represent is dropped too.
        assert_eq!(
            decode_request(br#"["r","k",1e400]"#),
            Err(Drop(FrameError::NotJson))
        );
    }

    #[test]
    fn deeply_nested_requests_are_rejected_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            decode_request(deep.as_bytes()),
            Err(BadRequest::Drop(FrameError::NotJson))
        );
    }

    #[test]
    fn replies_are_node_bytes() {
        assert_eq!(
            encode_reply(&json!("r1"), &Ok(json!("world"))),
            r#"["r1",null,"world"]"#
        );
        assert_eq!(
            encode_reply(&json!("r2"), &Err(RpcError::new("boom"))),
            r#"["r2","boom",null]"#
        );
        assert_eq!(
            encode_reply(
                &json!(5),
                &Err(RpcError::with_data("ERR_X", json!("partial")))
            ),
            r#"[5,"ERR_X","partial"]"#
        );
        assert_eq!(
            encode_reply(&json!("r3"), &Err(RpcError::new(""))),
            r#"["r3","Error",null]"#
        );
        assert_eq!(
            encode_reply(&json!("r4"), &Err(RpcError::Timeout)),
            r#"["r4","ERR_TIMEOUT",null]"#
        );
    }

    #[test]
    fn decode_reply_follows_node_truthiness() {
        assert_eq!(
            decode_reply(br#"["r",null,{"ok":1}]"#),
            Some((Some("r".into()), Ok(json!({"ok": 1}))))
        );
        assert_eq!(
            decode_reply(br#"["r","",1]"#),
            Some((Some("r".into()), Ok(json!(1))))
        );
        // Slots missing are null, slots past the third ignored, a rid that is not a string
        // none; escapes in the rid are decoded.
        assert_eq!(decode_reply(b"[]"), Some((None, Ok(Value::Null))));
        assert_eq!(
            decode_reply(br#"["r\u0031"]"#),
            Some((Some("r1".into()), Ok(Value::Null)))
        );
        assert_eq!(
            decode_reply(br#"[5,null,2,{"x":[1]},"more"]"#),
            Some((None, Ok(json!(2))))
        );
        assert_eq!(
            decode_reply(br#"[{"a":[1,{"b":2}]},0,[3]]"#),
            Some((None, Ok(json!([3]))))
        );
        assert_eq!(decode_reply(br#"["r",null,1"#), None, "truncated");
        assert_eq!(decode_reply(br#"["r",null,1] x"#), None, "trailing bytes");
        let (_, outcome) = decode_reply(br#"["r","boom","partial"]"#).expect("array");
        let error = outcome.expect_err("error");
        assert_eq!(error.message(), "boom");
        assert_eq!(error.data(), Some(&json!("partial")));
        let (_, outcome) = decode_reply(br#"["r",{"x":1},null]"#).expect("array");
        assert_eq!(outcome.expect_err("error").message(), "[object Object]");
        assert_eq!(decode_reply(b"5"), None);
        assert_eq!(decode_reply(b"{}"), None);
        assert_eq!(decode_reply(b"nope"), None);
    }
}
