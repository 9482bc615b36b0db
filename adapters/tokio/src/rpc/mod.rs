//! RPC peers over WebSocket ([`ws`]) and HTTP ([`http`]), and what both share: the request a
//! handler sees ([`Request`]), the [`Handler`] trait and what handlers return ([`IntoReply`]),
//! [`RpcError`], the server settings, the client trait ([`RpcClient`]) and the
//! `[rid, key, payload]` / `[rid, err, result]` JSON frames of grenache-nodejs-base.
//!
//! A worker:
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use grenache_tokio::{rpc::ws::PeerRpcServer, Link, LinkConfig, Request, RpcError};
//! let link = Link::new(LinkConfig::new("http://127.0.0.1:30001"))?;
//! let server = PeerRpcServer::builder(link)
//!     .handler(|req: Request| async move {
//!         match req.payload.get("number").and_then(|n| n.as_u64()) {
//!             Some(n) => Ok(serde_json::json!(n * 2)),
//!             None => Err(RpcError::new("ERR_NO_NUMBER")),
//!         }
//!     })
//!     .build();
//! server.listen(1337).await?;
//! server.start_announcing("double_worker");
//! // …
//! server.close(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! A handler that cannot fail returns its value: `|_| async { serde_json::json!("pong") }`.

// The module graph is a DAG: error ← frame ← stream ← http, and handler, server, client and
// gzip below the transports; this file only declares and re-exports.
mod client;
mod error;
mod frame;
mod gzip;
mod handler;
pub mod http;
pub mod metrics;
mod server;
pub mod stream;
pub mod ws;

pub use client::RpcClient;
pub use error::RpcError;
pub use handler::{Handler, HandlerFuture, IntoReply, Json, Request};
pub use http::HttpClientConfig;
pub use server::{ServerConfig, SMALL_MESSAGE};
pub use ws::WsClientConfig;

pub(crate) use client::rpc_client_by_inherent_methods;
pub(crate) use server::{accept_bounded, listening_methods, Listening};
