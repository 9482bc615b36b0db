//! One table of request frames, sent to the tokio WebSocket worker and the tokio HTTP worker,
//! against the rules of `grenache_core::wire::frame` (`Request::parse`, then `on_malformed`), which
//! the embassy worker follows too: the same frame gets the same answer, byte for byte, or no
//! answer, whichever the transport. No grape and no Node needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grenache_core::wire::frame::{
    on_malformed, write_reply_err, Malformed, Request as CoreRequest,
};
use grenache_tokio::rpc::{http, ws};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Each request frame and the answer prescribed for it (`None`: no answer at all). Valid
/// frames run the handler below, which echoes the payload and the key.
const TABLE: &[(&str, Option<&str>)] = &[
    // A readable rid whose key is not a string: an error, the rid echoed with its JSON type.
    ("[7]", Some(r#"[7,"ERR_REQUEST_MALFORMED",null]"#)),
    (
        r#"["r1",5,{}]"#,
        Some(r#"["r1","ERR_REQUEST_MALFORMED",null]"#),
    ),
    (r#"["r1"]"#, Some(r#"["r1","ERR_REQUEST_MALFORMED",null]"#)),
    // No string or number rid: nothing a client could match, so nothing is sent.
    (r#"[null,"k",{}]"#, None),
    (r#"[{},"k",{}]"#, None),
    ("[]", None),
    // Not an array, or not JSON.
    (r#"{"a":1}"#, None),
    ("5", None),
    (r#""str""#, None),
    ("null", None),
    ("[1,", None),
    ("not json", None),
    // Valid: an empty key is still a key; a missing payload is null.
    (r#"["r1","",1]"#, Some(r#"["r1",null,{"echo":1,"key":""}]"#)),
    (
        r#"[9,"svc"]"#,
        Some(r#"[9,null,{"echo":null,"key":"svc"}]"#),
    ),
    (
        r#"["r1","svc",{"a":1}]"#,
        Some(r#"["r1",null,{"echo":{"a":1},"key":"svc"}]"#),
    ),
];

/// What the core's rules say about `frame`: `Some(reply)` for a frame to answer (a valid one
/// gets its handler's answer, left to the table), `None` for one to drop.
fn core_verdict(frame: &str) -> Option<Option<String>> {
    match CoreRequest::parse(frame.as_bytes()) {
        Ok(_) => Some(None),
        Err(err) => match on_malformed(frame.as_bytes(), err) {
            Malformed::Drop => None,
            Malformed::Reply { rid, message } => {
                let mut out = [0u8; 256];
                let len = write_reply_err(&mut out, rid, message).unwrap();
                Some(Some(String::from_utf8(out[..len].to_vec()).unwrap()))
            }
        },
    }
}

#[test]
fn the_table_is_the_cores_rules() {
    for &(frame, expected) in TABLE {
        match (core_verdict(frame), expected) {
            (None, None) | (Some(None), Some(_)) => {}
            (Some(Some(reply)), Some(expected)) => assert_eq!(reply, expected, "{frame}"),
            (verdict, expected) => panic!("{frame}: core says {verdict:?}, table {expected:?}"),
        }
    }
}

fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

async fn handler(req: Request) -> Result<Value, RpcError> {
    Ok(json!({"echo": req.payload, "key": req.key}))
}

#[tokio::test]
async fn the_ws_worker_follows_the_table() {
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr = server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    // All on one connection: a malformed frame must not close it.
    const SENTINEL: &str = r#"["sentinel","svc",0]"#;
    for &(frame, expected) in TABLE {
        socket.send(Message::text(frame)).await.unwrap();
        socket.send(Message::text(SENTINEL)).await.unwrap();
        // Answers may come in any order: read until the sentinel's, then a little longer.
        let mut answers = Vec::new();
        let mut sentinel_seen = false;
        loop {
            let wait = if sentinel_seen { 100 } else { 3000 };
            let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(wait), socket.next()).await
            else {
                assert!(sentinel_seen, "{frame}: no answer to the sentinel");
                break;
            };
            let text = message.unwrap().into_text().unwrap().to_string();
            if text == r#"["sentinel",null,{"echo":0,"key":"svc"}]"# {
                sentinel_seen = true;
            } else {
                answers.push(text);
            }
        }
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(answers, expected, "ws, frame {frame}");
    }
}

#[tokio::test]
async fn the_http_worker_follows_the_table() {
    let server = http::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr: SocketAddr = server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for &(frame, expected) in TABLE {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\ngrc-compress: none\r\n\
             Content-Length: {}\r\n\r\n{frame}",
            frame.len()
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut answer))
            .await
            .expect("the server closes within 3 s")
            .unwrap();
        match expected {
            // Dropped: the connection is closed without a response.
            None => assert!(
                answer.is_empty(),
                "http, frame {frame}: expected no answer, got {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Some(expected) => {
                let answer = String::from_utf8(answer).unwrap();
                let (head, body) = answer
                    .split_once("\r\n\r\n")
                    .unwrap_or_else(|| panic!("http, frame {frame}: no response: {answer:?}"));
                assert!(
                    head.starts_with("HTTP/1.1 200 OK"),
                    "http, frame {frame}: {head}"
                );
                assert_eq!(body, expected, "http, frame {frame}");
            }
        }
    }
}
