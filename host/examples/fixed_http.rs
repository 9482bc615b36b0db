//! The loopback baseline of `ci/bench-grape.sh`: an HTTP/1.1 server that answers every request
//! with the same fixed body (what a grape's `/lookup` of one worker answers), doing nothing
//! else. Whatever a grape does beyond this is its own cost.
//!
//! `fixed_http [PORT]` (default 30999). Keep-alive; request bodies are read (by
//! `Content-Length`) and ignored; no chunked requests, no limits: a benchmark tool, not a server.
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 18\r\n\r\n[\"127.0.0.1:1337\"]";

/// The declared `Content-Length` of a request head (0 when absent or unreadable).
fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Answer every complete request in the buffer, then read more.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let total = end + 4 + content_length(&buf[..end]);
            if buf.len() < total {
                break;
            }
            buf.drain(..total);
            stream.write_all(RESPONSE).await?;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(30999);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("fixed_http listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream).await;
        });
    }
}
