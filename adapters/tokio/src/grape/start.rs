//! A running grape in one call: the HTTP API listener, the DHT thread and the serving task,
//! wired as the `grape` binary does, behind a handle that stops them.
//!
//! Shared by the `grape` binary and by `grenache demo`, which runs two grapes in one process.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::node::{Dht, DhtConfig, DhtThread};
use super::{bind_api, serve_api, GrapeConfig};

/// Why a grape could not start. `Display` gives a sentence for a person, with the port and a
/// hint when the port is taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The HTTP API port could not be bound.
    Bind(String),
    /// The DHT could not be started (UDP port taken, bootstrap name not resolvable, …).
    Dht(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind(msg) | StartError::Dht(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for StartError {}

fn in_use_hint(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::AddrInUse {
        " (the port is in use by another process)"
    } else {
        ""
    }
}

/// A grape serving its HTTP API over a DHT node. Dropping the handle stops the API (the DHT
/// thread ends once the API has let go of it); [`Grape::stop`] does the same and waits.
pub struct Grape {
    api_addr: SocketAddr,
    dht_port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    thread: Option<DhtThread>,
}

impl fmt::Debug for Grape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grape")
            .field("api_addr", &self.api_addr)
            .field("dht_port", &self.dht_port)
            .finish_non_exhaustive()
    }
}

impl Grape {
    /// Binds the API port (`config.api_port`; 0 picks a free one, which the `grape` command
    /// line refuses but a program embedding grapes wants), starts the DHT (UDP on
    /// `config.dht_port`, 0 = any free port, bootstrapping from `config.bootstrap`) and serves
    /// the API in a task of the current tokio runtime. A busy port fails here, at once.
    pub async fn start(config: GrapeConfig) -> Result<Grape, StartError> {
        let listener = bind_api(config.bind.as_deref(), config.api_port)
            .await
            .map_err(|err| {
                let host = config.bind.as_deref().unwrap_or("all interfaces");
                StartError::Bind(format!(
                    "cannot listen on HTTP API port {} ({host}): {err}{}",
                    config.api_port,
                    in_use_hint(&err)
                ))
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|err| StartError::Bind(format!("cannot read the API address: {err}")))?;
        let dht_config =
            DhtConfig::for_grape(&config).map_err(|e| StartError::Dht(e.to_string()))?;
        let (dht, thread) = Dht::spawn(dht_config).map_err(|err| {
            StartError::Dht(format!(
                "cannot listen on DHT UDP port {}: {err}{}",
                config.dht_port,
                in_use_hint(&err)
            ))
        })?;
        let dht_port = dht.local_addr().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let api_config = config.api_config();
        let task = tokio::spawn(async move {
            // Resolves on `stop` and also when the handle is dropped (the sender goes away).
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve_api(listener, Arc::new(dht), api_config, shutdown).await;
        });
        Ok(Grape {
            api_addr,
            dht_port,
            stop: Some(stop),
            task: Some(task),
            thread: Some(thread),
        })
    }

    /// The address the HTTP API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The URL a client on this machine uses for the API, e.g. `http://127.0.0.1:30001`
    /// (an unspecified listening address is reached through 127.0.0.1).
    pub fn url(&self) -> String {
        let ip = match self.api_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.api_addr.port()))
    }

    /// The UDP port of the DHT.
    pub fn dht_port(&self) -> u16 {
        self.dht_port
    }

    /// Stops accepting API connections, lets in-flight requests finish (up to the API's
    /// shutdown grace, 5 s), then waits for the DHT thread to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
