//! [`RpcError`]: every way an RPC fails, with the exact texts Node peers print and send.

use std::fmt;

use serde_json::Value;

use crate::link::LinkError;

/// An RPC failure. `Display` gives the exact message a Node peer would see or produce.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RpcError {
    /// The worker answered with an error (`[rid, message, data]`, i.e. Node
    /// `handler.reply(new Error(message), data)`). Also what a handler returns to fail.
    Remote {
        /// The error text (Node `err.message`).
        message: String,
        /// The result slot sent along with the error (Node delivers it too); `null` if none.
        data: Value,
    },
    /// No answer before the deadline (`ERR_TIMEOUT`).
    Timeout,
    /// The connection closed while the request was waiting for its answer
    /// (`ERR_TRANSPORT_CLOSE`). Node only fails queued requests this way and lets in-flight
    /// ones time out; here both fail at once.
    TransportClose,
    /// The lookup of the service failed (e.g. `ERR_GRAPE_LOOKUP_EMPTY`).
    Lookup(LinkError),
    /// Connecting or sending failed, or the HTTP status was not 2xx
    /// (`ERR_REQUEST_GENERIC: <detail>`).
    Request(String),
    /// The answer was not a JSON `[rid, err, result]` array (`ERR_REPLY_EMPTY`).
    ReplyEmpty,
    /// The answer of a compressed HTTP request was not gzip (`ERR_REPLY_ENCODING_COMPRESSION`).
    ReplyEncodingCompression,
    /// Compressing an HTTP request body failed (`ERR_REQUEST_ENCODING_COMPRESSION`).
    RequestEncodingCompression,
    /// The HTTP answer carried another request's rid (`ERR_REPLY_RID_MISMATCH`; Node ignores
    /// such an answer and times out).
    ReplyRidMismatch,
}

impl RpcError {
    /// A handler's error with this message and no data, as Node's `new Error(message)`.
    pub fn new(message: impl Into<String>) -> Self {
        RpcError::Remote {
            message: message.into(),
            data: Value::Null,
        }
    }

    /// A handler's error with a message and data sent along (Node `reply(err, data)`).
    pub fn with_data(message: impl Into<String>, data: Value) -> Self {
        RpcError::Remote {
            message: message.into(),
            data,
        }
    }

    /// The error text (the same as `to_string()`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The result slot that came with a remote error, if any.
    pub fn data(&self) -> Option<&Value> {
        match self {
            RpcError::Remote { data, .. } if !data.is_null() => Some(data),
            _ => None,
        }
    }

    /// The error slot of a reply frame. Never empty: an empty string is falsy in JavaScript
    /// and a Node client would take the reply for a success, so it becomes `Error` (what
    /// `String(new Error(''))` prints).
    pub(crate) fn wire_message(&self) -> String {
        let text = self.to_string();
        if text.is_empty() {
            "Error".to_string()
        } else {
            text
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Remote { message, .. } => f.write_str(message),
            RpcError::Timeout => f.write_str("ERR_TIMEOUT"),
            RpcError::TransportClose => f.write_str("ERR_TRANSPORT_CLOSE"),
            RpcError::Lookup(e) => write!(f, "{e}"),
            RpcError::Request(detail) => write!(f, "ERR_REQUEST_GENERIC: {detail}"),
            RpcError::ReplyEmpty => f.write_str("ERR_REPLY_EMPTY"),
            RpcError::ReplyEncodingCompression => f.write_str("ERR_REPLY_ENCODING_COMPRESSION"),
            RpcError::ReplyRidMismatch => f.write_str("ERR_REPLY_RID_MISMATCH"),
            RpcError::RequestEncodingCompression => f.write_str("ERR_REQUEST_ENCODING_COMPRESSION"),
        }
    }
}

impl std::error::Error for RpcError {}

/// A handler's error with this message (as [`RpcError::new`]), so that a handler returning
/// `Result<_, String>` or `Err("ERR_X")` fails with that text.
impl From<String> for RpcError {
    fn from(message: String) -> Self {
        RpcError::new(message)
    }
}

impl From<&str> for RpcError {
    fn from(message: &str) -> Self {
        RpcError::new(message)
    }
}

impl From<LinkError> for RpcError {
    fn from(e: LinkError) -> Self {
        RpcError::Lookup(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_node_strings() {
        assert_eq!(RpcError::Timeout.to_string(), "ERR_TIMEOUT");
        assert_eq!(RpcError::TransportClose.to_string(), "ERR_TRANSPORT_CLOSE");
        assert_eq!(
            RpcError::Lookup(LinkError::LookupEmpty).to_string(),
            "ERR_GRAPE_LOOKUP_EMPTY"
        );
        assert_eq!(
            RpcError::Request("x".into()).to_string(),
            "ERR_REQUEST_GENERIC: x"
        );
        assert_eq!(RpcError::ReplyEmpty.to_string(), "ERR_REPLY_EMPTY");
        assert_eq!(
            RpcError::ReplyEncodingCompression.to_string(),
            "ERR_REPLY_ENCODING_COMPRESSION"
        );
    }
}
