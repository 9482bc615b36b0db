//! Pub/Sub over WebSocket, as grenache-nodejs-ws 1.0.0 (`PeerPub` / `PeerSub`,
//! docs/protocol.md §12).
//!
//! * A publisher ([`PeerPub`]) is a plain WebSocket server (any path, no subprotocol, no
//!   permessage-deflate) that sends every published message verbatim, text as a text frame
//!   and bytes as a binary frame, to every connected socket. There is no topic routing, no
//!   JSON framing, no sequence number and no replay; whatever subscribers send is ignored.
//!   Announcing the name is the application's job in Node; here [`PeerPub::announce`] and
//!   [`PeerPub::start_announcing`] do it at the listening port.
//! * A subscriber ([`PeerSub::sub`]) looks the name up, picks one publisher at random,
//!   connects to `ws://{ip:port}/ws` and hands the frames it receives to a [`Subscription`]
//!   (a `Stream` of [`SubEvent`]). Nothing is sent to the publisher.
//!
//! Differences from Node, on purpose:
//! * **The subscriber reconnects.** When the connection to its publisher ends (or cannot be
//!   opened), it forgets the cached lookup, looks the name up again and connects to a random
//!   publisher, waiting [`SubConfig::backoff_initial`] × 2ⁿ between attempts (capped at
//!   [`SubConfig::backoff_max`], with ±25 % jitter). After [`SubConfig::max_attempts`]
//!   failed attempts in a row the subscription ends with [`SubEvent::Closed`]. A successful
//!   connection resets the count. Node's subscriber never reconnects (its 5 s check only
//!   closes a socket that is not connected) and crashes when the publisher is unreachable.
//! * A subscriber that cannot keep up does not make the publisher buffer without bound: each
//!   socket has a queue of [`PubConfig::queue`] messages; a socket that falls further behind
//!   is closed (a Rust subscriber then reconnects and misses the messages in between).
//! * [`PeerPub::stop`] closes the server and every socket (Node's `stop()` leaves the server
//!   running).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::limits::ConnectionLimits;
use crate::link::{Link, LinkError};
use crate::loops::Loops;
use crate::rpc::ws::ws_config;
use crate::rpc::{accept_bounded, Listening};

/// One published message: a text frame or a binary frame (Node: a `string` or a `Buffer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubMessage {
    /// A text frame (valid UTF-8).
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl From<String> for PubMessage {
    fn from(text: String) -> Self {
        PubMessage::Text(text)
    }
}

impl From<&str> for PubMessage {
    fn from(text: &str) -> Self {
        PubMessage::Text(text.to_string())
    }
}

impl From<Vec<u8>> for PubMessage {
    fn from(data: Vec<u8>) -> Self {
        PubMessage::Binary(Bytes::from(data))
    }
}

impl From<Bytes> for PubMessage {
    fn from(data: Bytes) -> Self {
        PubMessage::Binary(data)
    }
}

impl PubMessage {
    fn to_ws(&self) -> Message {
        match self {
            PubMessage::Text(text) => Message::text(text.clone()),
            PubMessage::Binary(data) => Message::binary(data.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Publisher

/// Settings of a [`PeerPub`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubConfig {
    /// Subscriber sockets at most; further clients wait for a slot (64 at most, fairly shared
    /// between IPs; the others are closed). Subscribers are never closed to make room.
    /// Default 1024.
    pub max_connections: usize,
    /// Subscriber sockets from one client IP at most; a further one is closed at once.
    /// Default 256, a quarter of `max_connections`, so that one host cannot take every slot.
    pub max_connections_per_ip: usize,
    /// Messages queued per subscriber socket; a socket further behind is closed. Default 1024.
    pub queue: usize,
    /// Bound on a subscriber's WebSocket upgrade. Default 30 s.
    pub handshake_timeout: Duration,
    /// Largest message read from a subscriber (they are ignored anyway). Default 1 MiB.
    pub max_inbound_message: usize,
}

impl Default for PubConfig {
    fn default() -> Self {
        PubConfig {
            max_connections: 1024,
            max_connections_per_ip: 256,
            queue: 1024,
            handshake_timeout: Duration::from_secs(30),
            max_inbound_message: 1 << 20,
        }
    }
}

/// A publisher (Node `PeerPub` of grenache-nodejs-ws with its `transport('server')`).
pub struct PeerPub {
    listening: Listening,
    config: PubConfig,
    sender: broadcast::Sender<PubMessage>,
}

impl PeerPub {
    /// A publisher announcing through `link`, with the default [`PubConfig`].
    pub fn new(link: Link) -> Self {
        Self::with_config(link, PubConfig::default())
    }

    /// Like [`PeerPub::new`] with explicit settings.
    pub fn with_config(link: Link, config: PubConfig) -> Self {
        let (sender, _) = broadcast::channel(config.queue.max(1));
        PeerPub {
            listening: Listening::new(link, "publisher"),
            config,
            sender,
        }
    }

    /// Listens on `0.0.0.0:port` (all interfaces, as Node; 0 picks a free port).
    pub async fn listen(&self, port: u16) -> io::Result<SocketAddr> {
        self.listen_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .await
    }

    /// Listens on `addr` (e.g. `127.0.0.1:0`) and accepts subscribers in background tasks.
    pub async fn listen_on(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let (sender, config) = (self.sender.clone(), self.config.clone());
        let local = self
            .listening
            .listen_on(addr, move |listener| async move {
                let limits = ConnectionLimits {
                    total: config.max_connections,
                    per_ip: config.max_connections_per_ip,
                };
                accept_bounded(
                    listener,
                    // Subscribers get broadcasts, not requests: served where the publisher is.
                    Loops::current(),
                    limits,
                    "grenache publisher",
                    // Subscribers have no requests to finish: `stop` ends the publisher.
                    std::future::pending(),
                    move |stream, peer, activity| {
                        // A subscriber is never idle: it is never closed to make room.
                        let busy = activity.busy();
                        let serving =
                            serve_subscriber(stream, peer, sender.clone(), config.clone());
                        async move {
                            serving.await;
                            drop(busy);
                        }
                    },
                )
                .await
            })
            .await?;
        tracing::info!("grenache publisher listening on {local}");
        Ok(local)
    }

    crate::rpc::listening_methods!("publisher", listening);

    /// Sends `message` to every connected subscriber (Node `pub(msg)`) and returns how many
    /// sockets it was queued for (0 when nobody is connected: the message is dropped).
    pub fn publish(&self, message: impl Into<PubMessage>) -> usize {
        self.sender.send(message.into()).unwrap_or(0)
    }

    /// The number of subscriber sockets connected now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Stops listening, closes every subscriber socket and stops the announcers. Dropping
    /// the publisher does the same.
    pub fn stop(&self) {
        self.listening.stop();
    }
}

async fn serve_subscriber(
    stream: TcpStream,
    peer: SocketAddr,
    sender: broadcast::Sender<PubMessage>,
    config: PubConfig,
) {
    let handshake = tokio_tungstenite::accept_async_with_config(
        stream,
        Some(ws_config(config.max_inbound_message)),
    );
    let mut ws = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("grenache publisher: handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("grenache publisher: handshake with {peer} timed out");
            return;
        }
    };
    // Subscribed only once the socket is open, as Node adds it on 'connection'.
    let mut messages = sender.subscribe();
    drop(sender);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if let Err(e) = ws.send(message.to_ws()).await {
                        tracing::debug!("grenache publisher: sending to {peer} failed: {e}");
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        "grenache publisher: subscriber {peer} is {missed} messages behind: closing it"
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    break;
                }
            },
            inbound = ws.next() => match inbound {
                // Node ignores what subscribers send; pings are answered by tungstenite.
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("grenache publisher: connection from {peer} failed: {e}");
                    break;
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subscriber

/// Settings of a [`PeerSub`]: Node's timeouts, plus the reconnection policy Node lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubConfig {
    /// Bound on one lookup of the publisher (Node: 5 s).
    pub lookup_timeout: Duration,
    /// Bound on opening the WebSocket (Node closes a socket not connected after ≤ 5 s).
    pub connect_timeout: Duration,
    /// Wait before the first reconnection attempt. Default 100 ms.
    pub backoff_initial: Duration,
    /// Longest wait between two attempts (the wait doubles up to it). Default 5 s.
    pub backoff_max: Duration,
    /// Failed attempts in a row (lookup or connect) after which the subscription ends with
    /// [`SubEvent::Closed`]; 0 means never reconnect (Node's behaviour). Default 30, about
    /// two minutes with the default waits.
    pub max_attempts: u32,
    /// Largest message accepted from the publisher (100 MiB, as Node's `ws`).
    pub max_message_size: usize,
    /// Events buffered for the application; when full, reading from the publisher pauses.
    /// Default 1024.
    pub buffer: usize,
}

impl Default for SubConfig {
    fn default() -> Self {
        SubConfig {
            lookup_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_attempts: 30,
            max_message_size: 100 << 20,
            buffer: 1024,
        }
    }
}

/// Why subscribing failed or a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubError {
    /// The lookup failed (e.g. `ERR_GRAPE_LOOKUP_EMPTY`).
    Lookup(LinkError),
    /// The lookup (bounded by [`SubConfig::lookup_timeout`]) or the whole first
    /// subscription (bounded by the `timeout` of [`PeerSub::sub`]) took too long
    /// (`ERR_TIMEOUT`).
    Timeout,
    /// Connecting to the publisher failed; the text says where and why.
    Connect(String),
}

impl fmt::Display for SubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubError::Lookup(e) => write!(f, "{e}"),
            SubError::Timeout => f.write_str("ERR_TIMEOUT"),
            SubError::Connect(why) => write!(f, "ERR_SUB_CONNECT: {why}"),
        }
    }
}

impl std::error::Error for SubError {}

/// What a [`Subscription`] yields (Node PeerSub events `connected`, `message`,
/// `disconnected`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubEvent {
    /// Connected to the publisher at `ip:port` (also after every reconnection).
    Connected(String),
    /// A message from the publisher.
    Message(PubMessage),
    /// The connection to the publisher at `ip:port` ended; reconnection starts.
    Disconnected(String),
    /// The subscription gave up after [`SubConfig::max_attempts`] failed attempts; the
    /// stream ends after this event.
    Closed(SubError),
}

/// A subscriber (Node `PeerSub` of grenache-nodejs-ws). Cheap to clone.
#[derive(Clone)]
pub struct PeerSub {
    link: Link,
    config: SubConfig,
}

impl PeerSub {
    /// A subscriber looking publishers up through `link`, with the default [`SubConfig`].
    pub fn new(link: Link) -> Self {
        Self::with_config(link, SubConfig::default())
    }

    /// Like [`PeerSub::new`] with explicit settings.
    pub fn with_config(link: Link, config: SubConfig) -> Self {
        PeerSub { link, config }
    }

    /// The Link used for lookups.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Looks `name` up, connects to one of its publishers (chosen at random) and returns the
    /// subscription, whose first event is [`SubEvent::Connected`]. `timeout` bounds this
    /// first lookup and connection together; after that the subscription reconnects on its
    /// own (see the module docs) until it is dropped.
    pub async fn sub(&self, name: &str, timeout: Duration) -> Result<Subscription, SubError> {
        let first = tokio::time::timeout(timeout, attempt(&self.link, name, &self.config, None))
            .await
            .map_err(|_| SubError::Timeout)??;
        let (events, receiver) = mpsc::channel(self.config.buffer.max(1));
        let task = tokio::spawn(run_subscription(
            self.link.clone(),
            name.to_string(),
            self.config.clone(),
            first,
            events,
        ));
        Ok(Subscription {
            events: receiver,
            task: task.abort_handle(),
        })
    }
}

/// The messages of one subscription, as a `Stream` of [`SubEvent`] (or through
/// [`Subscription::recv`]). Dropping it closes the connection and stops reconnecting.
pub struct Subscription {
    events: mpsc::Receiver<SubEvent>,
    task: AbortHandle,
}

impl Subscription {
    /// The next event; `None` once the subscription has ended (after [`SubEvent::Closed`]).
    pub async fn recv(&mut self) -> Option<SubEvent> {
        self.events.recv().await
    }

    /// The next message, skipping connection events; `None` once the subscription has ended.
    pub async fn next_message(&mut self) -> Option<PubMessage> {
        loop {
            match self.events.recv().await? {
                SubEvent::Message(message) => return Some(message),
                SubEvent::Connected(_) | SubEvent::Disconnected(_) | SubEvent::Closed(_) => {}
            }
        }
    }
}

impl Stream for Subscription {
    type Item = SubEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type SubSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// One lookup and connection attempt, avoiding `avoid` (the publisher that just failed)
/// when the lookup offers another one.
async fn attempt(
    link: &Link,
    name: &str,
    config: &SubConfig,
    avoid: Option<&str>,
) -> Result<(String, SubSocket), SubError> {
    let dests = match tokio::time::timeout(config.lookup_timeout, link.lookup(name)).await {
        Err(_) => return Err(SubError::Timeout),
        Ok(result) => result.map_err(SubError::Lookup)?,
    };
    let candidates: Vec<&String> = {
        let others: Vec<&String> = dests.iter().filter(|d| Some(d.as_str()) != avoid).collect();
        if others.is_empty() {
            dests.iter().collect()
        } else {
            others
        }
    };
    let dest = candidates
        .get(rand::random_range(0..candidates.len().max(1)))
        .copied()
        .ok_or(SubError::Lookup(LinkError::LookupEmpty))?;
    let url = format!("ws://{dest}/ws");
    let connect = async {
        let stream = TcpStream::connect(dest.as_str())
            .await
            .map_err(|e| format!("{url}: connect {e}"))?;
        let _ = stream.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            stream,
            Some(ws_config(config.max_message_size)),
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>(ws)
    };
    match tokio::time::timeout(config.connect_timeout, connect).await {
        Err(_) => Err(SubError::Connect(format!("{url}: timed out"))),
        Ok(Err(why)) => Err(SubError::Connect(why)),
        Ok(Ok(ws)) => Ok((dest.clone(), ws)),
    }
}

/// The wait before reconnection attempt `n` (0-based): `initial` × 2ⁿ capped at `max`,
/// then ±25 % jitter so that many subscribers of one publisher do not come back in step.
fn backoff(n: u32, initial: Duration, max: Duration) -> Duration {
    let base = initial
        .checked_mul(1u32.checked_shl(n.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX / 2);
    let quarter = ms / 4;
    Duration::from_millis(
        ms.saturating_sub(quarter)
            .saturating_add(rand::random_range(0..=quarter.saturating_mul(2))),
    )
}

async fn run_subscription(
    link: Link,
    name: String,
    config: SubConfig,
    first: (String, SubSocket),
    events: mpsc::Sender<SubEvent>,
) {
    let (mut dest, mut ws) = first;
    loop {
        if events
            .send(SubEvent::Connected(dest.clone()))
            .await
            .is_err()
        {
            return;
        }
        // Pump frames until the publisher goes away.
        loop {
            let event = match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    SubEvent::Message(PubMessage::Text(text.as_str().to_string()))
                }
                Some(Ok(Message::Binary(data))) => SubEvent::Message(PubMessage::Binary(data)),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!("grenache subscriber: connection to {dest} failed: {e}");
                    break;
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
        if events
            .send(SubEvent::Disconnected(dest.clone()))
            .await
            .is_err()
        {
            return;
        }
        // Reconnect: fresh lookups, bounded attempts with backoff.
        let mut last_error = SubError::Connect(format!("{dest}: disconnected"));
        let mut reconnected = None;
        for n in 0..config.max_attempts {
            tokio::time::sleep(backoff(n, config.backoff_initial, config.backoff_max)).await;
            link.forget(&name);
            match attempt(&link, &name, &config, Some(dest.as_str())).await {
                Ok(found) => {
                    reconnected = Some(found);
                    break;
                }
                Err(e) => {
                    tracing::debug!(
                        "grenache subscriber: reconnecting to {name} (attempt {}) failed: {e}",
                        n.saturating_add(1)
                    );
                    last_error = e;
                }
            }
        }
        match reconnected {
            Some((new_dest, new_ws)) => {
                dest = new_dest;
                ws = new_ws;
            }
            None => {
                tracing::warn!(
                    "grenache subscriber: giving up on {name} after {} attempts: {last_error}",
                    config.max_attempts
                );
                let _ = events.send(SubEvent::Closed(last_error)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for _ in 0..100 {
            let first = backoff(0, initial, max);
            assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
            let third = backoff(2, initial, max);
            assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(500));
            let late = backoff(40, initial, max);
            assert!(late >= Duration::from_millis(3750) && late <= Duration::from_millis(6250));
        }
    }

    #[test]
    fn messages_convert() {
        assert_eq!(PubMessage::from("a"), PubMessage::Text("a".to_string()));
        assert_eq!(
            PubMessage::from(vec![1u8, 2]),
            PubMessage::Binary(Bytes::from_static(&[1, 2]))
        );
    }

    fn link() -> Link {
        Link::new(crate::LinkConfig::new("http://127.0.0.1:9")).unwrap()
    }

    #[tokio::test]
    async fn publisher_broadcasts_text_and_binary_to_every_socket() {
        let publisher = PeerPub::new(link());
        let addr = publisher
            .listen_on("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut sockets = Vec::new();
        for path in ["/ws", "/"] {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
                .await
                .unwrap();
            sockets.push(ws);
        }
        while publisher.subscribers() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(publisher.publish("hello"), 2);
        assert_eq!(publisher.publish(vec![0u8, 255]), 2);
        for ws in &mut sockets {
            // What subscribers send is ignored.
            ws.send(Message::text("ignored")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::binary(vec![0u8, 255])
            );
        }
        publisher.stop();
        for ws in &mut sockets {
            let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            assert!(
                matches!(end, Ok(None | Some(Ok(Message::Close(_))) | Some(Err(_)))),
                "{end:?}"
            );
        }
    }

    #[tokio::test]
    async fn one_host_gets_at_most_its_share_of_subscriber_sockets() {
        let config = PubConfig {
            max_connections_per_ip: 2,
            ..PubConfig::default()
        };
        let publisher = PeerPub::with_config(link(), config);
        let addr = publisher
            .listen_on("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut kept = Vec::new();
        let mut refused = 0;
        for _ in 0..4 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let stream = socket.connect(addr).await.unwrap();
            match tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await {
                Ok((ws, _)) => kept.push(ws),
                Err(_) => refused += 1,
            }
        }
        assert_eq!((kept.len(), refused), (2, 2));
        // Another host is still let in.
        let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let wait = tokio::time::Instant::now() + Duration::from_secs(2);
        while publisher.subscribers() < 3 && tokio::time::Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(publisher.subscribers(), 3);
    }

    #[tokio::test]
    async fn slow_subscriber_is_disconnected_not_buffered() {
        let config = PubConfig {
            queue: 4,
            ..PubConfig::default()
        };
        let publisher = PeerPub::with_config(link(), config);
        let addr = publisher
            .listen_on("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        while publisher.subscribers() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Large messages fill the socket buffers, so the queue overflows.
        let big = "x".repeat(1 << 20);
        for _ in 0..64 {
            publisher.publish(big.as_str());
        }
        let mut received = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => received += 1,
                Ok(_) => break,
                Err(_) => panic!("the slow subscriber was not disconnected"),
            }
        }
        assert!(received < 64, "received {received}");
        while publisher.subscribers() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
