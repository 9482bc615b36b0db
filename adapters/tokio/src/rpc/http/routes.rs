//! Where an HTTP worker's requests go, and what Node's worker reads from their headers.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::rpc::handler::Handler;
use crate::rpc::stream::StreamHandler;

/// The header naming the body encoding (`none` or `gzip`).
pub(super) const GRC_COMPRESS: &str = "grc-compress";

/// The 413 body of a request over
/// [`ServerConfig::max_message_size`](crate::rpc::ServerConfig::max_message_size).
pub(super) const ERR_PAYLOAD_TOO_LARGE: &str = "ERR_PAYLOAD_TOO_LARGE";

/// The 413 body of a large request refused because
/// [`ServerConfig::memory_budget`](crate::rpc::ServerConfig::memory_budget) is spent.
pub(super) const ERR_MEMORY_BUDGET: &str = "ERR_MEMORY_BUDGET";

/// The exact 500 body Node sends for a `_gr` header that is not JSON (spaces included).
pub(super) const ERR_HEADER_PARSE_GR: &str = "[null, \"ERR_HEADER_PARSE_GR\", null]";

/// Where a worker's requests go.
#[derive(Clone)]
pub(crate) enum Routes {
    /// Every request is parsed as `[rid, key, payload]` and given to the handler.
    Buffered(Arc<dyn Handler>),
    /// Chunked requests (Node's `meta.isStream`) go to the stream handler raw, the others to
    /// the buffered handler.
    Split {
        buffered: Arc<dyn Handler>,
        stream: Arc<dyn StreamHandler>,
    },
    /// Every request goes to the stream handler raw, chunked or not (Node's
    /// `disableBuffered: true` with a `'stream'` listener).
    Streamed(Arc<dyn StreamHandler>),
}

impl Routes {
    /// The buffered handler, if the worker has one.
    pub(super) fn buffered(&self) -> Option<&Arc<dyn Handler>> {
        match self {
            Routes::Buffered(handler)
            | Routes::Split {
                buffered: handler, ..
            } => Some(handler),
            Routes::Streamed(_) => None,
        }
    }

    /// The stream handler, if the worker has one.
    pub(super) fn stream(&self) -> Option<&Arc<dyn StreamHandler>> {
        match self {
            Routes::Buffered(_) => None,
            Routes::Split { stream, .. } | Routes::Streamed(stream) => Some(stream),
        }
    }
}

/// What Node's HTTP worker reads from a request's headers besides framing: the `meta` its
/// handlers see.
pub(super) struct HeaderMeta {
    /// `_gr` parsed as JSON (Node `meta.infoHeaders`).
    pub(super) info: Option<Value>,
    /// `_a` (Node `meta.action`).
    pub(super) action: Option<String>,
    /// `_ar` parsed as JSON, `{}` when absent or invalid (Node `meta.args`).
    pub(super) args: Value,
    /// `grc-compress` contains `gzip`: the body and the answer are gzip bytes.
    pub(super) compress: bool,
    /// `transfer-encoding` is exactly `chunked` (Node `meta.isStream`).
    pub(super) is_stream: bool,
}

impl HeaderMeta {
    /// Reads the fields through `header` (a header's value by name, case-insensitive). `Err`
    /// when `_gr` is there but not JSON: Node answers it 500 [`ERR_HEADER_PARSE_GR`].
    pub(super) fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Self, ()> {
        let text = |name: &str| header(name).and_then(|v| std::str::from_utf8(v).ok());
        let info = match header("_gr") {
            None => None,
            Some(value) => Some(
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .ok_or(())?,
            ),
        };
        Ok(HeaderMeta {
            info,
            action: text("_a").map(str::to_string),
            args: text("_ar")
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .unwrap_or_else(|| json!({})),
            compress: text(GRC_COMPRESS).is_some_and(|v| v.contains("gzip")),
            is_stream: text("transfer-encoding") == Some("chunked"),
        })
    }
}
