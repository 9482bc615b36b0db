//! What a worker runs: the [`Request`] a handler sees and the [`Handler`] trait.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::error::RpcError;
use crate::tls::CertInfo;

/// One request as a worker's handler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The request id, echoed verbatim (same JSON type) in the reply.
    pub rid: Value,
    /// The service name the client asked for (the `key` of `[rid, key, payload]`, always a
    /// JSON string there; a non-string key from HTTP's `_gr` header is given in its JSON text
    /// form).
    pub key: String,
    /// The payload, any JSON value.
    pub payload: Value,
    /// HTTP only: the `_a` (action) header, as grenache-nodejs-http's `meta.action`.
    pub action: Option<String>,
    /// HTTP only: the `_ar` header parsed as JSON (`meta.args`), `{}` when absent or invalid.
    pub args: Value,
    /// The address of the connected client.
    pub remote: SocketAddr,
    /// Over TLS, the certificate the client presented (Node's `cert` argument, whose
    /// `fingerprint` is [`CertInfo::fingerprint`]); `None` without TLS.
    pub cert: Option<Arc<CertInfo>>,
}

/// The future a [`Handler`] returns: the outcome as a reply frame carries it.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'static>>;

/// What a worker does with a request: the equivalent of Node's
/// `service.on('request', (rid, key, payload, handler) => handler.reply(err, result))`.
///
/// `Ok(value)` is sent as `[rid, null, value]`; `Err(e)` as `[rid, message, data]`, where
/// `message` is `e`'s text (a Node client sees `Error: message`) and `data` the result slot of
/// [`RpcError::Remote`] (`null` otherwise). Any `Fn(Request) -> impl Future` closure whose
/// output is [`IntoReply`] is a handler, so a handler that cannot fail returns its value
/// (`|req| async move { json!(42) }`) and one that can returns a `Result`.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Many calls may run at once, on any thread: those of one
    /// WebSocket connection run concurrently on that connection's task (so that answers
    /// ready together leave in one write), those of different connections in parallel. A
    /// handler with heavy CPU work should move it off the task (`tokio::task::spawn_blocking`).
    fn handle(&self, request: Request) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoReply,
{
    fn handle(&self, request: Request) -> HandlerFuture {
        let handling = self(request);
        Box::pin(async move { handling.await.into_reply() })
    }
}

/// What a handler may return: anything that becomes a reply, `Ok(result)` or `Err(error)`.
///
/// Implemented for [`Value`], [`Json`] (any `T: Serialize`), the JSON scalars (`()` is
/// `null`), `String` and `&'static str`, `Vec<T: Serialize>`, `Option<T: IntoReply>` (`None`
/// is `null`), and `Result<T: IntoReply, E: Into<RpcError>>`. Why not every `T: Serialize`
/// directly: `Result` is `Serialize` too, so such an impl would overlap the `Result` one, and a
/// `Result<Value, String>` would silently go out as `{"Ok": …}` instead of as an error.
pub trait IntoReply {
    /// The outcome to send.
    fn into_reply(self) -> Result<Value, RpcError>;
}

impl IntoReply for Value {
    fn into_reply(self) -> Result<Value, RpcError> {
        Ok(self)
    }
}

impl<T: IntoReply, E: Into<RpcError>> IntoReply for Result<T, E> {
    fn into_reply(self) -> Result<Value, RpcError> {
        self.map_err(Into::into)?.into_reply()
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn into_reply(self) -> Result<Value, RpcError> {
        self.map_or(Ok(Value::Null), IntoReply::into_reply)
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Result<Value, RpcError> {
        Ok(Value::Null)
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Result<Value, RpcError> {
        Ok(Value::from(self))
    }
}

/// `IntoReply` for types `serde_json::Value` converts from without failing.
macro_rules! reply_from {
    ($($ty:ty),*) => {$(
        impl IntoReply for $ty {
            fn into_reply(self) -> Result<Value, RpcError> {
                Ok(Value::from(self))
            }
        }
    )*};
}

// Floats: NaN and infinities become `null`, as `JSON.stringify` writes them.
reply_from!(bool, String, i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64);

impl IntoReply for serde_json::Map<String, Value> {
    fn into_reply(self) -> Result<Value, RpcError> {
        Ok(Value::Object(self))
    }
}

impl<T: Serialize> IntoReply for Vec<T> {
    fn into_reply(self) -> Result<Value, RpcError> {
        Json(self).into_reply()
    }
}

/// A reply of any serializable type: `Ok(Json(my_struct))`, or just `Json(my_struct)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoReply for Json<T> {
    /// A value serde cannot turn into JSON (a map with non-string keys, a failing `Serialize`
    /// impl) is the handler's error `ERR_REPLY_SERIALIZE: <reason>`: the client gets an answer
    /// instead of waiting for its timeout.
    fn into_reply(self) -> Result<Value, RpcError> {
        serde_json::to_value(self.0).map_err(|e| RpcError::new(format!("ERR_REPLY_SERIALIZE: {e}")))
    }
}
