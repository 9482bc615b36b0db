//! Stream requests (Node's `peer.stream` and `'stream'` event) served by hyper: the request
//! body flows to the stream handler while its answer goes back (see [`crate::rpc::stream`]).

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

use super::routes::{HeaderMeta, Routes, ERR_HEADER_PARSE_GR};
use crate::rpc::server::{Accepted, Busy, Io, Shared};
use crate::rpc::stream::{
    AbortOnDrop, BodyStream, ChannelBody, StreamHandler, StreamMeta, StreamRequest, StreamResponder,
};
use crate::tls::CertInfo;

/// Serves a connection's stream requests with hyper, `prefix` being bytes already read from
/// it (see [`super::conn`]); with `keep_alive` false, hyper closes after one request.
pub(super) async fn serve_streams(
    accepted: Accepted,
    prefix: Vec<u8>,
    shared: Arc<Shared<Routes>>,
    keep_alive: bool,
) {
    let Accepted {
        io,
        peer,
        cert,
        allowed,
        activity,
    } = accepted;
    let read_timeout = shared.config.read_timeout;
    let closed = shared.closed();
    let service = service_fn(move |request| {
        // Busy from a request's head to its answer's head (or its stream handler's end).
        let busy = activity.busy();
        handle_stream(
            request,
            peer,
            cert.clone(),
            allowed,
            Arc::clone(&shared),
            busy,
        )
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(Prefixed::new(prefix, io)), service);
    let mut connection = std::pin::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = closed => {
            // The request being handled (if any) is answered, then the connection closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!("grenache http server: connection from {peer} ended: {e}");
    }
}

/// A request that gets no answer: hyper closes the connection.
#[derive(Debug)]
struct NoAnswer(String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// A buffered answer, or a stream handler's body.
type ReplyBody = Either<Full<Bytes>, ChannelBody>;

fn full(body: Bytes) -> Response<ReplyBody> {
    Response::new(Either::Left(Full::new(body)))
}

fn plain(status: StatusCode, body: &'static str) -> Response<ReplyBody> {
    let mut response = full(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response
}

async fn handle_stream(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    cert: Option<Arc<CertInfo>>,
    allowed: bool,
    shared: Arc<Shared<Routes>>,
    busy: Busy,
) -> Result<Response<ReplyBody>, NoAnswer> {
    if !allowed {
        // The TLS `verify_client` hook rejected this client.
        return Ok(plain(StatusCode::UNAUTHORIZED, "Forbidden"));
    }
    let (parts, body) = request.into_parts();
    let Ok(meta) = HeaderMeta::from_headers(|name| parts.headers.get(name).map(|v| v.as_bytes()))
    else {
        tracing::warn!("grenache http server: bad _gr header from {peer}");
        return Ok(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            ERR_HEADER_PARSE_GR,
        ));
    };
    let Some(stream) = shared.routes.stream() else {
        return Err(NoAnswer("no stream handler".to_string()));
    };
    let meta = StreamMeta {
        info_headers: meta.info,
        action: meta.action,
        args: meta.args,
        is_stream: meta.is_stream,
        compress: meta.compress,
        remote: peer,
        cert,
    };
    let request = StreamRequest {
        meta,
        headers: parts.headers,
        body: BodyStream::new(body, Some(shared.config.read_timeout), None),
    };
    serve_stream(request, Arc::clone(stream), busy).await
}

/// Runs a stream handler in its own task (it keeps reading the request body while hyper
/// writes its response) and answers with the response head it starts.
async fn serve_stream(
    request: StreamRequest,
    handler: Arc<dyn StreamHandler>,
    busy: Busy,
) -> Result<Response<ReplyBody>, NoAnswer> {
    let peer = request.meta.remote;
    let (head_tx, head_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let responder = StreamResponder::new(head_tx, done_rx, request.meta.compress);
    let task = tokio::spawn(async move {
        let _busy = busy;
        let ok = match AssertUnwindSafe(handler.handle(request, responder))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("grenache http server: the stream handler for {peer} failed: {e}");
                false
            }
            Err(_) => {
                tracing::error!("grenache http server: the stream handler for {peer} panicked");
                false
            }
        };
        let _ = done_tx.send(ok);
        ok
    });
    // Until the response body owns it, the handler dies with this request's service future.
    let guard = AbortOnDrop(task.abort_handle());
    match head_rx.await {
        Ok(mut response) => {
            response.body_mut().own_task(guard);
            Ok(response.map(Either::Right))
        }
        // The responder was dropped unused: an empty 200 if the handler succeeded.
        Err(_) => match task.await {
            Ok(true) => Ok(full(Bytes::new())),
            _ => Err(NoAnswer(
                "the stream handler failed before answering".to_string(),
            )),
        },
    }
}

/// A stream whose first reads return bytes already read from it: how the loop hands a
/// connection to hyper in the middle of a request.
struct Prefixed {
    prefix: Vec<u8>,
    /// Bytes of `prefix` already returned.
    taken: usize,
    io: Box<dyn Io>,
}

impl Prefixed {
    fn new(prefix: Vec<u8>, io: Box<dyn Io>) -> Self {
        Prefixed {
            prefix,
            taken: 0,
            io,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.taken..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or(&[]));
            this.taken += n;
            if this.taken == this.prefix.len() {
                this.prefix = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

crate::rpc::server::write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_prefixed_stream_reads_its_prefix_then_the_stream() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut stream = Prefixed::new(b"head ".to_vec(), Box::new(far));
        near.write_all(b"body").await.unwrap();
        drop(near);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"head body");
    }
}
