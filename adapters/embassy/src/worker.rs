//! The RPC worker: Grenache's HTTP and WebSocket transports on one TCP port.
//!
//! Each of `N` connection slots runs an accept loop on the port (several slots, so that a
//! client's back-to-back connections are not reset while one closes). Each accepted connection
//! is a [`WorkerConnection`] from the core, which decides everything the peer sees (transport,
//! answers, errors, timeouts; see [`grenache_core::rpc::worker`]); this module only moves its
//! bytes between the socket and the connection, waits until its deadlines and hands requests
//! to the [`Handler`].

use core::cell::RefCell;

use embassy_futures::join::join_array;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::{with_deadline, with_timeout, Duration};
use grenache_core::rpc::worker::{Action, Buffers, WorkerConnection};
use grenache_core::wire::ws::WsConnection;
use grenache_core::Instant;

pub use grenache_core::rpc::worker::{
    Handler, Request, ERR_REPLY_TOO_LARGE, HEAD_ROOM, IDLE_TIMEOUT, KEEP_ALIVE_TIMEOUT,
    MAX_HEADERS, MAX_KEY,
};

// The buffer sizes below are the defaults of the const generics of [`Connection`] (and so
// of [`WorkerStorage`] and [`serve`]); a board with little RAM and small requests picks
// smaller ones, see [`Connection`].

/// Receive window of each TCP socket (default of `RX`).
pub const TCP_RX: usize = 1024;
/// Send buffer of each TCP socket (default of `TX`).
pub const TCP_TX: usize = 1024;
/// Bytes of one HTTP request (head and body together), and the read buffer of a WebSocket
/// (default of `REQUEST`).
pub const MAX_REQUEST: usize = 1536;
/// Longest WebSocket message (a request frame) accepted; longer ones close with 1009
/// (default of `MESSAGE`).
pub const MAX_MESSAGE: usize = 1024;
/// Bytes the handler may write as its result (default of `RESULT`).
pub const MAX_RESULT: usize = 512;
/// Bytes of the reply buffer: the reply frame (the result plus the echoed rid and framing)
/// behind [`HEAD_ROOM`] for the HTTP head or WebSocket header (default of `REPLY`; keep
/// `REPLY` about 240 bytes over `RESULT`, or long rids get `ERR_REPLY_TOO_LARGE`). It also
/// holds the handshake answer and WebSocket control frames, so at least
/// [`grenache_core::rpc::worker::MIN_REPLY`] bytes.
pub const MAX_REPLY: usize = MAX_RESULT + 192 + HEAD_ROOM;

/// The error message when another slot is inside the handler (cannot happen: slots call it
/// synchronously from one task; answered rather than assumed).
pub const ERR_BUSY: &str = "ERR_BUSY";

/// The buffers of one connection slot: the TCP socket's receive window (`RX`) and send
/// buffer (`TX`), the request buffer (`REQUEST`: an HTTP request, head and body, or the
/// WebSocket read buffer), the longest WebSocket message (`MESSAGE`), the handler's result
/// (`RESULT`) and the reply frame (`REPLY`). The defaults are the consts of this module
/// (6.2 KiB a slot); the tutorial's Fibonacci worker is served well by
/// `Connection<512, 512, 768, 512, 64, 256>` (2.6 KiB), see `firmware/stm32-f429zi`.
pub struct Connection<
    const RX: usize = TCP_RX,
    const TX: usize = TCP_TX,
    const REQUEST: usize = MAX_REQUEST,
    const MESSAGE: usize = MAX_MESSAGE,
    const RESULT: usize = MAX_RESULT,
    const REPLY: usize = MAX_REPLY,
> {
    tcp_rx: [u8; RX],
    tcp_tx: [u8; TX],
    req: [u8; REQUEST],
    result: [u8; RESULT],
    reply: [u8; REPLY],
    ws: WsConnection<MESSAGE>,
}

impl<
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    /// An idle slot.
    pub const fn new() -> Self {
        Connection {
            tcp_rx: [0; RX],
            tcp_tx: [0; TX],
            req: [0; REQUEST],
            result: [0; RESULT],
            reply: [0; REPLY],
            ws: WsConnection::new(),
        }
    }
}

impl<
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Default for Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    fn default() -> Self {
        Self::new()
    }
}

/// `N` connection slots: the worker's whole memory, for a static. The other parameters are
/// the buffer sizes of each slot, as for [`Connection`].
pub struct WorkerStorage<
    const N: usize,
    const RX: usize = TCP_RX,
    const TX: usize = TCP_TX,
    const REQUEST: usize = MAX_REQUEST,
    const MESSAGE: usize = MAX_MESSAGE,
    const RESULT: usize = MAX_RESULT,
    const REPLY: usize = MAX_REPLY,
> {
    conns: [Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>; N],
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    /// `N` idle slots (a `const fn`, so the storage can be a plain `static` initialiser).
    pub const fn new() -> Self {
        WorkerStorage {
            conns: [const { Connection::new() }; N],
        }
    }
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Default for WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Serves Grenache RPC on TCP `port` forever, `N` connections at once. Await it from a
/// dedicated task. The stack needs `N` free socket slots.
pub async fn serve<
    H: Handler,
    const N: usize,
    const RX: usize,
    const TX: usize,
    const REQUEST: usize,
    const MESSAGE: usize,
    const RESULT: usize,
    const REPLY: usize,
>(
    stack: Stack<'_>,
    port: u16,
    handler: &mut H,
    storage: &mut WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>,
) -> ! {
    // The slots run in one task; the handler is called synchronously, never across an
    // await, so a `RefCell` borrow can never be contended.
    let handler = core::cell::RefCell::new(handler);
    let handler = &handler;
    let slots = storage
        .conns
        .each_mut()
        .map(|c| slot(stack, port, handler, c));
    join_array(slots).await;
    // `slot` never returns; this only satisfies the type.
    loop {
        core::future::pending::<()>().await;
    }
}

async fn slot<
    H: Handler,
    const RX: usize,
    const TX: usize,
    const REQUEST: usize,
    const MESSAGE: usize,
    const RESULT: usize,
    const REPLY: usize,
>(
    stack: Stack<'_>,
    port: u16,
    handler: &core::cell::RefCell<&mut H>,
    conn: &mut Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>,
) {
    let Connection {
        tcp_rx,
        tcp_tx,
        req,
        result,
        reply,
        ws,
    } = conn;
    loop {
        let mut sock = TcpSocket::new(stack, tcp_rx, tcp_tx);
        if sock.accept(port).await.is_err() {
            continue;
        }
        let mut conn = WorkerConnection::new(Buffers {
            request: &mut req[..],
            result: &mut result[..],
            reply: &mut reply[..],
            ws: &mut *ws,
        });
        run_conn(&mut sock, &mut conn, &mut Shared(handler)).await;
        // Say goodbye politely (close, 1 s for the peer to take the rest), but never wait long
        // for a peer that does not read (abort, 100 ms for the reset to leave). One await point
        // for both: each costs flash.
        for (abort, limit) in [(false, 1000), (true, 100)] {
            if abort {
                sock.abort();
            } else {
                sock.close();
            }
            let _ = with_timeout(Duration::from_millis(limit), sock.flush()).await;
        }
    }
}

/// The handler shared by the slots of one task.
struct Shared<'c, 'h, H>(&'c RefCell<&'h mut H>);

impl<H: Handler> Handler for Shared<'_, '_, H> {
    fn handle(&mut self, request: &Request<'_>, out: &mut [u8]) -> Result<usize, &'static str> {
        match self.0.try_borrow_mut() {
            Ok(mut h) => h.handle(request, out),
            Err(_) => Err(ERR_BUSY),
        }
    }
}

/// The embassy instant of a core deadline (both count milliseconds; the core's origin is
/// embassy's boot).
fn at(until: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_millis(until.as_millis())
}

/// Runs one accepted connection until it ends: one read and one write await point (the
/// code of a socket future is generated once per await point, and flash is short).
async fn run_conn<H: Handler, const MESSAGE: usize>(
    sock: &mut TcpSocket<'_>,
    conn: &mut WorkerConnection<'_, MESSAGE>,
    handler: &mut Shared<'_, '_, H>,
) {
    loop {
        let now = Instant::from_millis(embassy_time::Instant::now().as_millis());
        // A timed-out read or write only loops: the next poll is past its deadline and closes.
        match conn.poll(now, handler) {
            Action::Receive { until } => {
                match with_deadline(at(until), sock.read(conn.read_buf())).await {
                    Ok(Ok(n)) => conn.received(n),
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
            Action::Send { bytes, until } => {
                match with_deadline(at(until), sock.write(bytes)).await {
                    Ok(Ok(n)) if n > 0 => conn.sent(n),
                    Ok(_) => return,
                    Err(_) => {}
                }
            }
            Action::Close => return,
        }
    }
}

/// The tutorial's worker ("Microservices with Grenache"): payload `{"number": n}`, result
/// the tutorial's `fibonacci(n)` (1, 1, 2, 3, 5, ...; `fibonacci(10)` = 89). Any key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fibonacci;

/// The largest `n` whose tutorial Fibonacci number fits a `u64`.
pub const FIBONACCI_MAX: u64 = 91;

impl Handler for Fibonacci {
    fn handle(&mut self, request: &Request<'_>, out: &mut [u8]) -> Result<usize, &'static str> {
        let n = grenache_core::wire::json::get(request.payload, "number")
            .ok()
            .flatten()
            .and_then(|raw| grenache_core::wire::json::parse_u64(raw).ok())
            .ok_or("ERR_BAD_PAYLOAD: expected {\"number\": n}")?;
        if n > FIBONACCI_MAX {
            return Err("ERR_BAD_PAYLOAD: number too large");
        }
        let (mut a, mut b) = (1u64, 1u64);
        for _ in 1..n {
            (a, b) = (b, a.saturating_add(b));
        }
        let mut w = grenache_core::wire::json::Writer::new(out);
        w.u64(b).map_err(|_| ERR_REPLY_TOO_LARGE)?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(payload: &[u8]) -> Result<u64, &'static str> {
        let mut out = [0u8; 32];
        let request = Request {
            rid: b"1",
            key: "fibonacci_worker",
            payload,
        };
        let n = Fibonacci.handle(&request, &mut out)?;
        let s = core::str::from_utf8(&out[..n]).map_err(|_| "utf8")?;
        s.parse().map_err(|_| "num")
    }

    #[test]
    fn fibonacci_as_the_tutorial() {
        assert_eq!(call(br#"{"number":0}"#), Ok(1));
        assert_eq!(call(br#"{"number":1}"#), Ok(1));
        assert_eq!(call(br#"{"number":2}"#), Ok(2));
        assert_eq!(call(br#"{"number": 10}"#), Ok(89));
        assert_eq!(call(br#"{"number":91}"#), Ok(7540113804746346429));
        assert!(call(br#"{"number":92}"#).is_err());
        assert!(call(b"null").is_err());
        assert!(call(br#"{"number":"x"}"#).is_err());
    }
}
