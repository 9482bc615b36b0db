//! The grape HTTP API over real TCP connections, against a fake DHT: exact status lines, headers
//! and bodies of docs/protocol.md §3.4/§3.10, dispatch, limits, keep-alive, timeouts, hostile
//! clients, the connection cap and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grenache_tokio::grape::{
    bind_api, serve_api, ApiConfig, DhtError, GetQuery, GotItem, GrapeDht, MutablePut, PutItem,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Our own node id in the fake (grape A of the captures in docs/protocol.md §6.8).
const OWN_ID: &str = "168d7c4142ec1c92189ffde1b4d4e8ece40669b3";
/// The remote node of the notes' remote-hit example.
const REMOTE_ID: &str = "f4e960d05d1e19ac57744d90a8af4b0e885b9fb4";
const REMOTE_TOKEN: &str = "31d8c2c62729ed5b7648313d1dfc4a06451ab529";
const HELLO_KEY: &str = "6d33adc2b6b2c14c3036feefb7fedbca1a880527";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Lookup(Vec<u8>),
    Announce(Vec<u8>, u16),
    Unannounce(Vec<u8>, u16),
    Put(PutItem),
    Get(GetQuery),
}

/// A DHT with canned answers that records what the API asked.
#[derive(Default)]
struct FakeDht {
    calls: Mutex<Vec<Call>>,
}

impl FakeDht {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn id(hex_id: &str) -> [u8; 20] {
    hex::decode(hex_id).unwrap().try_into().unwrap()
}

fn sha1(bytes: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(bytes).digest().bytes()
}

impl GrapeDht for FakeDht {
    async fn lookup(&self, name: Vec<u8>) -> Vec<SocketAddrV4> {
        self.record(Call::Lookup(name.clone()));
        match name.as_slice() {
            b"rest:util:net" => vec!["127.0.0.1:1337".parse().unwrap()],
            b"slow" => {
                tokio::time::sleep(Duration::from_millis(400)).await;
                vec!["127.0.0.1:1".parse().unwrap()]
            }
            _ => vec![],
        }
    }

    async fn announce(&self, name: Vec<u8>, port: u16) -> Result<usize, DhtError> {
        self.record(Call::Announce(name.clone(), port));
        match name.as_slice() {
            b"isolated" => Err(DhtError::NoNodes),
            b"unreachable" => Err(DhtError::AllFailed),
            _ => Ok(1),
        }
    }

    async fn unannounce(&self, name: Vec<u8>, port: u16) -> Result<usize, DhtError> {
        self.record(Call::Unannounce(name, port));
        Ok(2)
    }

    async fn put(&self, item: PutItem) -> Result<[u8; 20], DhtError> {
        self.record(Call::Put(item.clone()));
        match &item.mutable {
            None => Ok(sha1(&item.v_bencoded)),
            Some(m) => match m.salt.as_slice() {
                // CLI grapes answer every mutable put with 400: no ack.
                b"mysalt" => Err(DhtError::AllFailed),
                b"again" => Err(DhtError::Krpc {
                    code: 302,
                    message: "sequence number less than current".into(),
                }),
                b"cas" => Err(DhtError::Krpc {
                    code: 301,
                    message: "CAS mismatch, re-read and try again".into(),
                }),
                _ => Ok(sha1(&[&m.k[..], &m.salt[..]].concat())),
            },
        }
    }

    async fn get(&self, query: GetQuery) -> Result<Option<GotItem>, DhtError> {
        self.record(Call::Get(query.clone()));
        if query.hash != id(HELLO_KEY) {
            return Ok(None);
        }
        Ok(Some(if query.cache {
            GotItem {
                id: id(OWN_ID),
                token: None,
                v_bencoded: b"11:hello world".to_vec(),
                k: None,
                sig: None,
                seq: None,
                from_local: true,
            }
        } else {
            GotItem {
                id: id(REMOTE_ID),
                token: Some(hex::decode(REMOTE_TOKEN).unwrap()),
                v_bencoded: b"11:hello world".to_vec(),
                k: None,
                sig: None,
                seq: None,
                from_local: false,
            }
        }))
    }

    fn dht_port(&self) -> u16 {
        20001
    }
}

struct Server {
    addr: SocketAddr,
    dht: Arc<FakeDht>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(config: ApiConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dht = Arc::new(FakeDht::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_api(listener, Arc::clone(&dht), config, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            dht,
            stop: Some(stop),
            task,
        }
    }

    async fn default() -> Server {
        Server::start(ApiConfig::default()).await
    }

    async fn connect(&self) -> Client {
        Client {
            stream: BufReader::new(TcpStream::connect(self.addr).await.unwrap()),
        }
    }

    /// One request on a fresh connection.
    async fn post(&self, path: &str, body: &str) -> HttpResponse {
        let mut client = self.connect().await;
        client.send(&post(path, body)).await;
        client.response().await.unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve_api returns after shutdown")
            .unwrap();
    }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Debug)]
struct HttpResponse {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// Exactly Node's header set and order for a kept-alive connection (docs/protocol.md §3.1).
    fn assert_node_headers(&self) {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Date", "Connection", "Keep-Alive", "Content-Length"],
            "{self:?}"
        );
        assert_eq!(self.header("Connection"), Some("keep-alive"));
        assert_eq!(self.header("Keep-Alive"), Some("timeout=5"));
        assert_eq!(
            self.header("Content-Length"),
            Some(self.body.len().to_string().as_str())
        );
        let date = self.header("Date").unwrap();
        assert_eq!(date.len(), 29, "{date}");
        assert!(
            date.ends_with(" GMT") && date.as_bytes()[3] == b',',
            "{date}"
        );
    }

    /// Status, `Content-Length` and body as in the notes' tables, with Node's headers.
    fn assert_exact(&self, status: u16, body: &str) {
        assert_eq!((self.status(), self.text()), (status, body), "{self:?}");
        self.assert_node_headers();
    }
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// Reads one response (head, then `Content-Length` bytes); `None` on EOF before a head.
    async fn response(&mut self) -> Option<HttpResponse> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let status_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await.unwrap();
        Some(HttpResponse {
            status_line,
            headers,
            body,
        })
    }

    /// Whether the server closed the connection within `within` (EOF or reset).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

const BUFFER_ERR_5: &str = "The first argument must be of type string or an instance of Buffer, \
                            ArrayBuffer, or Array or an Array-like Object. Received type number (5)";

#[tokio::test]
async fn exchanges_of_the_protocol_notes() {
    let server = Server::default().await;
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/announce",
            r#"{"data":["rest:util:net",1337],"rid":"abc"}"#,
            200,
            "1",
        ),
        (
            "/lookup",
            r#"{"data":"rest:util:net","rid":"abc"}"#,
            200,
            r#"["127.0.0.1:1337"]"#,
        ),
        ("/lookup", r#"{}"#, 200, r#""ERR_GRAPE_LOOKUP""#),
        ("/foo", r#"{"data":"x"}"#, 200, r#""ERR_REQ_NOTFOUND""#),
        ("/lookup", "garbage", 500, "ERR_GRAPE_PAYLOAD_INVALID"),
        (
            "/lookup",
            "null",
            500,
            "Cannot read properties of null (reading 'data')",
        ),
        (
            "/announce",
            r#"{"data":"x"}"#,
            200,
            r#""ERR_GRAPE_ANNOUNCE""#,
        ),
        (
            "/announce",
            r#"{"data":["svc","1337"]}"#,
            200,
            r#""ERR_GRAPE_SERVICE_PORT""#,
        ),
        // Fix: out-of-range ports are refused at once (Node: "All queries failed" after 2 s).
        (
            "/announce",
            r#"{"data":["svc",70000]}"#,
            200,
            r#""ERR_GRAPE_SERVICE_PORT""#,
        ),
        (
            "/announce",
            r#"{"data":["unreachable",1]}"#,
            200,
            r#""All queries failed""#,
        ),
        (
            "/announce",
            r#"{"data":["isolated",1]}"#,
            200,
            r#""No nodes to query""#,
        ),
        (
            "/put",
            r#"{"data":{"v":"hello world"},"rid":"x"}"#,
            200,
            "\"6d33adc2b6b2c14c3036feefb7fedbca1a880527\"",
        ),
        (
            "/get",
            r#"{"data":"6d33adc2b6b2c14c3036feefb7fedbca1a880527","rid":"x"}"#,
            200,
            r#"{"id":"168d7c4142ec1c92189ffde1b4d4e8ece40669b3","token":null,"v":"hello world"}"#,
        ),
        (
            "/get",
            r#"{"data":{"hash":"6d33adc2b6b2c14c3036feefb7fedbca1a880527","cache":false}}"#,
            200,
            r#"{"id":"f4e960d05d1e19ac57744d90a8af4b0e885b9fb4","token":"31d8c2c62729ed5b7648313d1dfc4a06451ab529","v":"hello world"}"#,
        ),
        (
            "/get",
            r#"{"data":"0000000000000000000000000000000000000001"}"#,
            200,
            "",
        ),
    ];
    for (path, body, status, want) in cases {
        let response = server.post(path, body).await;
        response.assert_exact(*status, want);
    }
    // Lengths quoted by the notes.
    assert_eq!(server.post("/lookup", "null").await.body.len(), 47);
    assert_eq!(
        server
            .post("/get", &format!(r#"{{"data":"{HELLO_KEY}"}}"#))
            .await
            .body
            .len(),
        80
    );
    let remote = format!(r#"{{"data":{{"hash":"{HELLO_KEY}","cache":false}}}}"#);
    assert_eq!(server.post("/get", &remote).await.body.len(), 118);

    let k = "aa".repeat(32);
    let sig = "bb".repeat(64);
    let mutable = |salt: &str| {
        format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":1,"salt":"{salt}"}}}}"#)
    };
    server
        .post("/put", &mutable("mysalt"))
        .await
        .assert_exact(200, r#""All queries failed""#);
    server
        .post("/put", &mutable("again"))
        .await
        .assert_exact(302, r#""302 sequence number less than current""#);
    server
        .post("/put", &mutable("cas"))
        .await
        .assert_exact(301, r#""301 CAS mismatch, re-read and try again""#);
    let expected_key = hex::encode(sha1(&[&[0xaa; 32][..], b"other"].concat()));
    server
        .post("/put", &mutable("other"))
        .await
        .assert_exact(200, &format!("\"{expected_key}\""));

    // What reached the DHT.
    let calls = server.dht.calls();
    assert_eq!(calls[0], Call::Announce(b"rest:util:net".to_vec(), 1337));
    assert_eq!(calls[1], Call::Lookup(b"rest:util:net".to_vec()));
    assert!(calls.contains(&Call::Put(PutItem {
        v_bencoded: b"11:hello world".to_vec(),
        mutable: None
    })));
    assert!(calls.contains(&Call::Put(PutItem {
        v_bencoded: b"1:x".to_vec(),
        mutable: Some(MutablePut {
            k: [0xaa; 32],
            sig: [0xbb; 64],
            seq: 1,
            salt: b"other".to_vec(),
            cas: None
        })
    })));
    // Refused announces never reached the DHT; port 0 is never passed on.
    let announced: Vec<&[u8]> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Announce(name, port) => {
                assert_ne!(*port, 0);
                Some(name.as_slice())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        announced,
        [&b"rest:util:net"[..], b"unreachable", b"isolated"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn response_rules_table() {
    let server = Server::start(ApiConfig {
        max_payload: 64,
        ..ApiConfig::default()
    })
    .await;
    // Not JSON, including an empty body.
    server
        .post("/lookup", "")
        .await
        .assert_exact(500, "ERR_GRAPE_PAYLOAD_INVALID");
    server
        .post("/lookup", "{")
        .await
        .assert_exact(500, "ERR_GRAPE_PAYLOAD_INVALID");
    // Synchronous throws: raw 500 with V8's text.
    server
        .post("/put", "{}")
        .await
        .assert_exact(500, "Cannot read properties of undefined (reading 'k')");
    server
        .post("/get", "{}")
        .await
        .assert_exact(500, "Cannot read properties of undefined (reading 'salt')");
    server
        .post("/announce", r#"{"data":[5,1]}"#)
        .await
        .assert_exact(500, BUFFER_ERR_5);
    // Validation errors: 200 with a JSON string.
    server
        .post("/put", r#"{"data":{}}"#)
        .await
        .assert_exact(200, r#""opts.v not given""#);
    server
        .post("/get", r#"{"data":{}}"#)
        .await
        .assert_exact(200, r#""ERR_GRAPE_GENERIC""#);
    // Success with `undefined`: empty body.
    server
        .post("/get", r#"{"data":"zz"}"#)
        .await
        .assert_exact(200, "");
    // A body of exactly the limit is accepted, one byte more is not.
    let at_limit = format!(r#"{{"data":"{}"}}"#, "a".repeat(64 - 11));
    assert_eq!(at_limit.len(), 64);
    server
        .post("/lookup", &at_limit)
        .await
        .assert_exact(200, "[]");
    let over = format!(r#"{{"data":"{}"}}"#, "a".repeat(64 - 10));
    let response = server.post("/lookup", &over).await;
    assert_eq!(
        (response.status(), response.text()),
        (413, "ERR_GRAPE_PAYLOAD_SIZE")
    );
    assert_eq!(response.status_line, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(response.header("Connection"), Some("close"));
    server.shutdown().await;
}

#[tokio::test]
async fn dispatch_variants() {
    let server = Server::default().await;
    let body = r#"{"data":"rest:util:net"}"#;
    for path in [
        "/lookup",
        "/Lookup",
        "/_lookup",
        "/-lookup",
        "/__lookup",
        "/lookup-",
        "/lookup_",
    ] {
        server
            .post(path, body)
            .await
            .assert_exact(200, r#"["127.0.0.1:1337"]"#);
    }
    for path in [
        "/LOOKUP",
        "/lookUp",
        "/look_up",
        "/lookup?x=1",
        "/lookup/",
        "/",
        "/lookup%20",
    ] {
        server
            .post(path, body)
            .await
            .assert_exact(200, r#""ERR_REQ_NOTFOUND""#);
    }
    // Any method works, GET with a body included.
    for method in ["GET", "PUT", "DELETE", "PATCH", "FOO"] {
        let mut client = server.connect().await;
        let request = format!(
            "{method} /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        client.send(request.as_bytes()).await;
        client
            .response()
            .await
            .unwrap()
            .assert_exact(200, r#"["127.0.0.1:1337"]"#);
    }
    // The unannounce extension (by the client that announced), and port 0 meaning the grape's
    // DHT port.
    server
        .post("/announce", r#"{"data":["svc",0]}"#)
        .await
        .assert_exact(200, "1");
    server
        .post("/unannounce", r#"{"data":["svc",0]}"#)
        .await
        .assert_exact(200, "2");
    server
        .post("/_unannounce", r#"{"data":"svc"}"#)
        .await
        .assert_exact(200, r#""ERR_GRAPE_UNANNOUNCE""#);
    let calls = server.dht.calls();
    assert!(calls.contains(&Call::Unannounce(b"svc".to_vec(), 20001)));
    assert!(calls.contains(&Call::Announce(b"svc".to_vec(), 20001)));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_reading_them() {
    let server = Server::start(ApiConfig {
        max_payload: 1024,
        ..ApiConfig::default()
    })
    .await;
    // Declared length far beyond the limit, only a few bytes sent: answered at once.
    let mut client = server.connect().await;
    client
        .send(b"POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{\"data\"")
        .await;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(2), client.response())
        .await
        .expect("413 before the body arrives")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (response.status(), response.text()),
        (413, "ERR_GRAPE_PAYLOAD_SIZE")
    );
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(client.closed_within(Duration::from_secs(2)).await);

    // A chunked body that never ends: refused once it passes the limit.
    let mut client = server.connect().await;
    client
        .send(b"POST /lookup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let chunk = format!("400\r\n{}\r\n", "a".repeat(0x400));
    client.send(chunk.as_bytes()).await;
    client.send(chunk.as_bytes()).await;
    let response = tokio::time::timeout(Duration::from_secs(2), client.response())
        .await
        .expect("413 while the body is still streaming")
        .unwrap();
    assert_eq!(
        (response.status(), response.text()),
        (413, "ERR_GRAPE_PAYLOAD_SIZE")
    );
    assert!(client.closed_within(Duration::from_secs(2)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::default().await;
    let mut client = server.connect().await;
    client
        .send(&post("/lookup", r#"{"data":"rest:util:net"}"#))
        .await;
    client
        .response()
        .await
        .unwrap()
        .assert_exact(200, r#"["127.0.0.1:1337"]"#);
    client
        .send(&post("/announce", r#"{"data":["svc",1337]}"#))
        .await;
    client.response().await.unwrap().assert_exact(200, "1");
    // Pipelined: two requests in one write.
    let mut both = post("/lookup", r#"{"data":"none"}"#);
    both.extend_from_slice(&post("/get", r#"{"data":"zz"}"#));
    client.send(&both).await;
    client.response().await.unwrap().assert_exact(200, "[]");
    client.response().await.unwrap().assert_exact(200, "");
    // `Connection: close` from the client is honoured.
    client
        .send(
            b"POST /lookup HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await;
    let last = client.response().await.unwrap();
    assert_eq!(last.header("Connection"), Some("close"));
    assert_eq!(last.header("Keep-Alive"), None);
    assert!(client.closed_within(Duration::from_secs(2)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_and_idle_clients_are_dropped() {
    let server = Server::start(ApiConfig {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    // Half a head, then silence.
    let mut slow = server.connect().await;
    slow.send(b"POST /lookup HTTP/1.1\r\nHost: x\r\n").await;
    let started = Instant::now();
    assert!(slow.closed_within(Duration::from_secs(3)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // An idle keep-alive connection is closed after the same timeout.
    let mut idle = server.connect().await;
    idle.send(&post("/lookup", "{}")).await;
    let response = idle.response().await.unwrap();
    assert_eq!(response.header("Keep-Alive"), Some("timeout=0"));
    assert!(idle.closed_within(Duration::from_secs(3)).await);
    // A body that stops half-way gets 408 and a closed connection.
    let mut stalled = server.connect().await;
    stalled
        .send(b"POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"data\"")
        .await;
    let response = stalled.response().await.unwrap();
    assert_eq!(
        (response.status(), response.header("Connection")),
        (408, Some("close"))
    );
    assert!(stalled.closed_within(Duration::from_secs(3)).await);
    // A DHT call that outlasts the head timeout is still answered (the timer only runs while
    // the server waits for a head).
    let response = server.post("/lookup", r#"{"data":"slow"}"#).await;
    assert_eq!(
        (response.status(), response.text()),
        (200, r#"["127.0.0.1:1"]"#)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn head_requests_get_the_head_only() {
    let server = Server::default().await;
    let mut client = server.connect().await;
    let body = r#"{"data":"rest:util:net"}"#;
    let head = format!(
        "HEAD /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.send(head.as_bytes()).await;
    // Then a POST on the same connection: its answer must not be mistaken for a HEAD body.
    client.send(&post("/lookup", body)).await;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = client.stream.get_mut().read(&mut chunk).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&all);
            if text.matches("HTTP/1.1").count() == 2 && text.ends_with(r#"["127.0.0.1:1337"]"#) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches(r#"["127.0.0.1:1337"]"#).count(), 1, "{text}");
    assert!(text.ends_with(r#"["127.0.0.1:1337"]"#), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_never_takes_the_server_down() {
    let server = Server::default().await;
    let junk: &[&[u8]] = &[
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /lookup HTTP/9.9\r\n\r\n",
        b"POST /lookup HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /lookup HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /lookup HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for bytes in junk {
        let mut client = server.connect().await;
        client.send(bytes).await;
        // Whatever the answer (hyper's 400, or none), the connection ends.
        if let Some(response) = client.response().await {
            assert!(response.status() >= 400, "{bytes:?}: {response:?}");
        }
        assert!(
            client.closed_within(Duration::from_secs(3)).await,
            "{bytes:?}"
        );
    }
    // Non-ASCII in the target is taken as is (and routes nowhere), like Node.
    let mut client = server.connect().await;
    client
        .send(b"POST /\xc3\xa9 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"data\":\"x\"}")
        .await;
    let response = client.response().await.unwrap();
    assert_eq!(
        (response.status(), response.text()),
        (200, r#""ERR_REQ_NOTFOUND""#)
    );
    // A huge head is refused too.
    let mut client = server.connect().await;
    let huge = format!(
        "POST /lookup HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = client.stream.get_mut().write_all(huge.as_bytes()).await;
    if let Some(response) = client.response().await {
        assert_eq!(response.status(), 431, "{response:?}");
    }
    assert!(client.closed_within(Duration::from_secs(3)).await);
    // Arbitrary JSON shapes in data get an answer, never a dropped connection.
    for body in [
        r#"{"data":{"length":1e300}}"#,
        r#"{"data":[{"length":1e12},1]}"#,
        r#"{"data":{"v":{"length":1e300},"k":{"length":1e10}}}"#,
        r#"{"data":{"hash":[1,2],"salt":{"type":"Buffer","data":"x"}}}"#,
        r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#,
    ] {
        for path in ["/lookup", "/announce", "/put", "/get", "/unannounce"] {
            let response = server.post(path, body).await;
            assert!(
                matches!(response.status(), 200 | 500),
                "{path} {body}: {response:?}"
            );
        }
    }
    server
        .post("/lookup", r#"{"data":"rest:util:net"}"#)
        .await
        .assert_exact(200, r#"["127.0.0.1:1337"]"#);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_cap_holds_new_clients_back() {
    let server = Server::start(ApiConfig {
        max_connections: 2,
        header_timeout: Duration::from_secs(20),
        ..ApiConfig::default()
    })
    .await;
    let mut first = server.connect().await;
    let second = server.connect().await;
    // Both are being served (the second is accepted once the first has its permit).
    first.send(&post("/lookup", "{}")).await;
    first.response().await.unwrap();
    let mut third = server.connect().await;
    third
        .send(&post("/lookup", r#"{"data":"rest:util:net"}"#))
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.response())
            .await
            .is_err(),
        "a third connection must wait while two are open"
    );
    drop(first);
    let response = tokio::time::timeout(Duration::from_secs(3), third.response())
        .await
        .expect("served once a slot frees up")
        .unwrap();
    assert_eq!(
        (response.status(), response.text()),
        (200, r#"["127.0.0.1:1337"]"#)
    );
    drop(second);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let server = Server::default().await;
    let addr = server.addr;
    let mut idle = server.connect().await;
    idle.send(&post("/lookup", "{}")).await;
    idle.response().await.unwrap();
    let mut busy = server.connect().await;
    busy.send(&post("/lookup", r#"{"data":"slow"}"#)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.shutdown());
    let response = busy.response().await.unwrap();
    assert_eq!(
        (response.status(), response.text()),
        (200, r#"["127.0.0.1:1"]"#)
    );
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(idle.closed_within(Duration::from_secs(2)).await);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn bind_api_listens_like_node() {
    // No address: all interfaces, IPv4 included.
    let any = bind_api(None, 0).await.unwrap();
    let port = any.local_addr().unwrap().port();
    let (client, accepted) = tokio::join!(TcpStream::connect(("127.0.0.1", port)), any.accept());
    client.unwrap();
    accepted.unwrap();
    // The same port again: AddrInUse, at once.
    let err = bind_api(None, port).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let err = bind_api(Some("127.0.0.1"), port).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // An address, and a host name.
    let local = bind_api(Some("127.0.0.1"), 0).await.unwrap();
    assert!(local.local_addr().unwrap().ip().is_loopback());
    let named = bind_api(Some("localhost"), 0).await.unwrap();
    assert!(named.local_addr().unwrap().ip().is_loopback());
}
