//! A small HTTP/1.1 POST client on hyper, shared by the Link (grape API) and the HTTP RPC
//! client. It pools keep-alive connections, bounds the response body it reads back, and turns
//! transport failures into the short reasons node-fetch prints (`connect ECONNREFUSED …`), so
//! error strings stay close to the Node ones.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Why a POST produced no usable response.
#[derive(Debug)]
pub(crate) enum HttpFailure {
    /// Connecting, sending or reading failed; the text is a node-fetch-like reason.
    Transport(String),
    /// The response body was larger than the caller's limit.
    TooLarge,
}

/// A pooled HTTP/1.1 client (cheap to clone: clones share the pool).
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// A client whose idle pooled connections are closed after `idle`. Node servers close
    /// idle keep-alive sockets after 5 s, so callers talking to Node keep `idle` below that
    /// to avoid reusing a socket the server is closing at the same moment.
    pub(crate) fn new(idle: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(8)
            .build(connector);
        HttpClient { inner }
    }

    /// POSTs `body` to `uri` with `headers` and reads at most `max_body` bytes of the
    /// response. No timeout here: callers wrap the whole call in their own deadline.
    pub(crate) async fn post(
        &self,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        max_body: usize,
    ) -> Result<(StatusCode, Bytes), HttpFailure> {
        let mut builder = hyper::Request::builder()
            .method(Method::POST)
            .uri(uri.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| HttpFailure::Transport(e.to_string()))?;
        let response = self
            .inner
            .request(request)
            .await
            .map_err(|e| HttpFailure::Transport(reason(&e, uri)))?;
        let status = response.status();
        match Limited::new(response.into_body(), max_body).collect().await {
            Ok(collected) => Ok((status, collected.to_bytes())),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(HttpFailure::TooLarge),
            Err(e) => Err(HttpFailure::Transport(chain(e.as_ref()))),
        }
    }
}

/// node-fetch's `reason` part of `request to <url> failed, reason: <reason>`: for a refused
/// connection Node prints `connect ECONNREFUSED <ip:port>`; other failures keep the error
/// chain's text.
fn reason(error: &(dyn StdError + 'static), uri: &Uri) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("connect ECONNREFUSED {authority}")
                }
                std::io::ErrorKind::ConnectionReset => "socket hang up".to_string(),
                _ => io.to_string(),
            };
        }
        source = e.source();
    }
    chain(error)
}

/// The messages of an error and its sources, joined with `: `.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// Aborts a background task when dropped (the caller's deadline cancels the whole POST).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// POSTs `body` to `https://{dest}/` over a fresh TLS connection (as Node's HTTPS client,
/// which makes a new agent, so a new connection, per request) and reads at most `max_body`
/// bytes of the response.
pub(crate) async fn post_tls(
    tls: &crate::tls::TlsClientConfig,
    dest: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    max_body: usize,
) -> Result<(StatusCode, Bytes), HttpFailure> {
    let stream = tokio::net::TcpStream::connect(dest)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                HttpFailure::Transport(format!("connect ECONNREFUSED {dest}"))
            }
            _ => HttpFailure::Transport(format!("connect {e} {dest}")),
        })?;
    let _ = stream.set_nodelay(true);
    let stream = tls
        .connect(dest, stream)
        .await
        .map_err(HttpFailure::Transport)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| HttpFailure::Transport(chain(&e)))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("grenache https client: connection ended: {e}");
        }
    });
    let _driver = AbortOnDrop(driver.abort_handle());
    let mut builder = hyper::Request::builder()
        .method(Method::POST)
        .uri("/")
        .header(hyper::header::HOST, dest);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| HttpFailure::Transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpFailure::Transport(reason_tls(&e)))?;
    let status = response.status();
    match Limited::new(response.into_body(), max_body).collect().await {
        Ok(collected) => Ok((status, collected.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(HttpFailure::TooLarge),
        Err(e) => Err(HttpFailure::Transport(chain(e.as_ref()))),
    }
}

/// A failed HTTPS exchange: a reset (e.g. the server refused the client certificate after
/// the handshake, as TLS 1.3 allows) is node's `socket hang up`.
fn reason_tls(error: &hyper::Error) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return "socket hang up".to_string();
            }
        }
        source = e.source();
    }
    chain(error)
}
