//! The worker connection engine (`rpc::worker`) on arbitrary bytes: never panics, asks to
//! read only with room to read into, answers the same whatever the split of the input into
//! reads and of the output into writes (the `100 Continue` interim response aside: it is sent
//! only when a body has not started to arrive), and always closes once its deadline passes.
#![no_main]

use grenache_core::rpc::worker::{Action, Buffers, Handler, Request, WorkerConnection};
use grenache_core::wire::ws::WsConnection;
use grenache_core::Instant;
use libfuzzer_sys::fuzz_target;

/// Echoes the payload; the key `fail` errs, `liar` claims more than its buffer.
struct Echo;

impl Handler for Echo {
    fn handle(&mut self, r: &Request<'_>, result: &mut [u8]) -> Result<usize, &'static str> {
        match r.key {
            "fail" => Err("boom"),
            "liar" => Ok(result.len() + 1),
            _ => {
                let out = result.get_mut(..r.payload.len()).ok_or("no room")?;
                out.copy_from_slice(r.payload);
                Ok(r.payload.len())
            }
        }
    }
}

/// Everything sent before the close.
fn run(input: &[u8], read: usize, write: usize) -> Vec<u8> {
    let (mut request, mut result, mut reply) = ([0u8; 512], [0u8; 128], [0u8; 256]);
    let mut ws = Box::new(WsConnection::<256>::new());
    let mut c = WorkerConnection::new(Buffers {
        request: &mut request,
        result: &mut result,
        reply: &mut reply,
        ws: &mut ws,
    });
    let (mut out, mut rest, mut now) = (Vec::new(), input, Instant::from_millis(0));
    // Each poll consumes input, sends, or moves the clock to a deadline; after the input is
    // gone the connection must close at its next deadline. The bound only catches a loop.
    for _ in 0..1_000_000 {
        match c.poll(now, &mut Echo) {
            Action::Send { bytes, .. } => {
                let n = bytes.len().min(write);
                out.extend_from_slice(&bytes[..n]);
                c.sent(n);
            }
            Action::Receive { until } if rest.is_empty() => {
                assert!(until > now, "a deadline in the past");
                now = until;
            }
            Action::Receive { .. } => {
                let buf = c.read_buf();
                assert!(!buf.is_empty(), "asked to read into a full buffer");
                let n = buf.len().min(rest.len()).min(read);
                buf[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                c.received(n);
            }
            Action::Close => return out,
        }
    }
    panic!("the connection neither closed nor waited");
}

fn without_continue(mut out: Vec<u8>) -> Vec<u8> {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    while let Some(i) = out.windows(CONTINUE.len()).position(|w| w == CONTINUE) {
        out.drain(i..i + CONTINUE.len());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&[r, w], input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = run(input, usize::MAX, usize::MAX);
    let pieces = run(input, usize::from(r).max(1), usize::from(w).max(1));
    assert_eq!(without_continue(whole), without_continue(pieces));
});
