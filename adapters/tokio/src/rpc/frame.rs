//! The JSON frames of grenache-nodejs-base: requests `[rid, key, payload]` and replies
//! `[rid, err, result]`, read with the core's rules (core/src/wire/frame.rs).

use std::fmt;

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
/// into `ERR_REPLY_EMPTY`), else the rid and the outcome. A truthy error slot is an error
/// whose message is its JavaScript string form; the result slot comes along as its data.
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<(Value, Result<Value, RpcError>)> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    let mut items = items.into_iter();
    let rid = items.next().unwrap_or(Value::Null);
    let error = items.next().unwrap_or(Value::Null);
    let result = items.next().unwrap_or(Value::Null);
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
            Some((json!("r"), Ok(json!({"ok": 1}))))
        );
        assert_eq!(
            decode_reply(br#"["r","",1]"#),
            Some((json!("r"), Ok(json!(1))))
        );
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
