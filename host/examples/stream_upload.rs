//! Streams a file to a worker over HTTP (Node's `peer.stream`), which counts its bytes while
//! they arrive and answers `[rid, null, {"bytes": n}]`. Memory stays bounded whatever the
//! file size.
//!
//! `stream_upload server [GRAPE_URL]` runs the worker (announced as `stream_upload`);
//! `stream_upload client FILE [GRAPE_URL]` uploads FILE. `GRAPE` defaults to
//! `http://127.0.0.1:30001`.
use std::time::Duration;

use grenache_tokio::rpc::http::{PeerRpcClient, PeerRpcServer};
use grenache_tokio::rpc::stream::{StreamOptions, StreamRequest, StreamResponder};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};

async fn count(mut req: StreamRequest, responder: StreamResponder) -> std::io::Result<()> {
    let mut bytes = 0usize;
    while let Some(chunk) = req.body.chunk().await {
        bytes += chunk?.len();
    }
    let rid = req.meta.rid().cloned().unwrap_or_default();
    let answer = serde_json::json!({ "bytes": bytes, "action": req.meta.action });
    responder.reply(&rid, &Ok(answer)).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let grape = |i: usize| {
        args.get(i)
            .cloned()
            .or_else(|| std::env::var("GRAPE").ok())
            .unwrap_or_else(|| "http://127.0.0.1:30001".to_string())
    };
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let link = Link::new(LinkConfig::new(grape(2)))?;
            let buffered = |_: Request| async { Err::<(), _>(RpcError::new("ERR_STREAMS_ONLY")) };
            let server = PeerRpcServer::builder(link)
                .handler(buffered)
                .stream_handler(count)
                .build();
            let addr = server.listen(0).await?;
            server.start_announcing("stream_upload");
            println!("stream_upload worker on {addr}");
            std::future::pending::<()>().await;
            Ok(())
        }
        Some("client") => {
            let path = args
                .get(2)
                .cloned()
                .ok_or("usage: stream_upload client FILE [GRAPE_URL]")?;
            let client = PeerRpcClient::new(Link::new(LinkConfig::new(grape(3)))?);
            let options = StreamOptions::new()
                .action("upload")
                .args(serde_json::json!({ "name": &path }))
                .timeout(Duration::from_secs(600));
            let stream = client.stream("stream_upload", options).await?;
            let mut body = stream.body;
            let upload = tokio::spawn(async move {
                let mut file = tokio::fs::File::open(path).await?;
                tokio::io::copy(&mut file, &mut body).await
            });
            let response = stream.response.await?;
            let sent = upload.await??;
            let answer = response.body.collect(1 << 20).await?;
            println!(
                "sent {sent} bytes, worker says {}",
                String::from_utf8_lossy(&answer)
            );
            Ok(())
        }
        _ => Err("usage: stream_upload server [GRAPE_URL] | client FILE [GRAPE_URL]".into()),
    }
}
