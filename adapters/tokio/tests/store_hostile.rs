//! A hostile host (127.0.0.2) against a real grape: floods of `announce_peer` into one name and
//! into the whole store, and BEP 44 puts until the item store is full, leave the honest
//! worker's entry and the honest item in place (issue 12: the heaviest source pays).
//!
//! Grape A is the target; grape B, bootstrapped from A, is how the honest side reaches it (a
//! worker announcing and putting through B's HTTP API, so that A stores them on behalf of
//! 127.0.0.1). Each check asks A's own store over raw KRPC (B holds copies of its own, which
//! would hide a loss on A) and A's HTTP API, as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::NodeId;
use grenache_core::wire::krpc::{
    encode_announce_peer, encode_get, encode_get_peers, encode_put_immutable, encode_response_id,
    parse, tid, tid_of, Message, Response,
};
use grenache_tokio::grape::{BootstrapNode, Grape, GrapeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const HONEST_PORT: u16 = 4242;

/// Grape A (the target) and grape B (bootstrapped from A), both on 127.0.0.1.
async fn two_grapes(max_values: usize) -> (Grape, Grape) {
    let mut config_a = GrapeConfig::new(0, 0);
    config_a.bind = Some("127.0.0.1".into());
    config_a.dht_max_values = max_values;
    let a = Grape::start(config_a).await.unwrap();
    let mut config_b = GrapeConfig::new(0, 0);
    config_b.bind = Some("127.0.0.1".into());
    config_b.bootstrap = vec![BootstrapNode {
        host: "127.0.0.1".into(),
        port: a.dht_port(),
    }];
    let b = Grape::start(config_b).await.unwrap();
    (a, b)
}

/// `POST path` with a JSON body to a grape's API; the response body.
async fn post(grape: &Grape, path: &str, body: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(grape.api_addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the grape answers within 20 s");
    let text = String::from_utf8(response).unwrap();
    let (_, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    body.to_owned()
}

/// Posts until the answer is not a DHT error (B may not know A for a moment after start).
async fn post_until_ok(grape: &Grape, path: &str, body: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = post(grape, path, body).await;
        if !answer.contains("No nodes") && !answer.contains("All queries failed") {
            return answer;
        }
        assert!(Instant::now() < deadline, "{path} still fails: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A KRPC client on its own loopback address.
struct Krpc {
    socket: UdpSocket,
    to: SocketAddr,
    id: NodeId,
    next_tid: u16,
    /// Whether we answered one of A's queries (its verification ping).
    answered_a_query: bool,
}

impl Krpc {
    async fn bind(ip: Ipv4Addr, grape: &Grape) -> Krpc {
        Krpc {
            socket: UdpSocket::bind(SocketAddrV4::new(ip, 0)).await.unwrap(),
            to: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, grape.dht_port())),
            id: NodeId([ip.octets()[3]; 20]),
            next_tid: 1,
            answered_a_query: false,
        }
    }

    /// Sends the queries that `encode(buf, t)` writes, `window` at a time, and waits for their
    /// answers; returns every answer datagram (a lost one is left out after 2 s).
    async fn run(
        &mut self,
        count: usize,
        encode: impl Fn(&mut [u8], &[u8], usize) -> usize,
    ) -> Vec<Vec<u8>> {
        const WINDOW: usize = 64;
        let mut answers = Vec::with_capacity(count);
        let mut q = [0u8; 1500];
        let mut buf = [0u8; 1500];
        for start in (0..count).step_by(WINDOW) {
            let end = (start + WINDOW).min(count);
            let first = self.next_tid;
            for i in start..end {
                let t = tid(self.next_tid);
                self.next_tid = self.next_tid.wrapping_add(1);
                let n = encode(&mut q, &t, i);
                self.socket.send_to(&q[..n], self.to).await.unwrap();
            }
            let mut pending = end - start;
            while pending > 0 {
                let got =
                    tokio::time::timeout(Duration::from_secs(2), self.socket.recv(&mut buf)).await;
                let Ok(Ok(n)) = got else { break };
                // A may query us too (it pings a node it does not know): answered, as a live
                // node would; only answers count.
                self.answer_query(&buf[..n]).await;
                let in_window = parse(&buf[..n])
                    .ok()
                    .filter(|m| !matches!(m, Message::Query { .. }))
                    .and_then(|m| tid_of(m.t()))
                    .is_some_and(|t| t.wrapping_sub(first) < WINDOW as u16);
                if in_window {
                    answers.push(buf[..n].to_vec());
                    pending -= 1;
                }
            }
        }
        answers
    }

    /// Answers `datagram` if it is a query (with our id, whatever it asks).
    async fn answer_query(&mut self, datagram: &[u8]) {
        if let Ok(Message::Query { t, .. }) = parse(datagram) {
            let mut out = [0u8; 64];
            let n = encode_response_id(&mut out, t, &self.id).unwrap();
            self.socket.send_to(&out[..n], self.to).await.unwrap();
            self.answered_a_query = true;
        }
    }

    /// Waits (at most 5 s) for A's verification ping after a first query and answers it: A then
    /// keeps us as a routing-table contact, with a contact's answer budget. A real attacker
    /// would do the same; the flood below is then bounded by the store's rules alone, not by
    /// the budget of a stranger.
    async fn become_contact(&mut self) {
        let mut buf = [0u8; 1500];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.answered_a_query {
            let got = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            let Ok(Ok(n)) = got else {
                panic!("A never pinged the attacker");
            };
            self.answer_query(&buf[..n]).await;
        }
        // The answer reaches A, which enters us into its table.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// One query; its answer's datagram.
    async fn call(&mut self, encode: impl Fn(&mut [u8], &[u8], &NodeId) -> usize) -> Vec<u8> {
        let id = self.id;
        let mut answers = self.run(1, |q, t, _| encode(q, t, &id)).await;
        answers.pop().expect("the grape answers")
    }

    /// A token for this address, from a `get_peers`.
    async fn token(&mut self) -> Vec<u8> {
        let answer = self
            .call(|q, t, id| encode_get_peers(q, t, id, b"any").unwrap())
            .await;
        response(&answer).token.unwrap().to_vec()
    }

    /// The peers A's own store holds for `name` (a `get_peers` answer's `values`).
    async fn stored_peers(&mut self, name: &[u8]) -> Vec<PeerAddr> {
        let answer = self
            .call(|q, t, id| encode_get_peers(q, t, id, name).unwrap())
            .await;
        response(&answer)
            .values
            .map(|v| v.iter().collect())
            .unwrap_or_default()
    }

    /// The raw `v` A's own item store holds under `key`.
    async fn stored_item(&mut self, key: &[u8; 20]) -> Option<Vec<u8>> {
        let answer = self
            .call(|q, t, id| encode_get(q, t, id, key).unwrap())
            .await;
        response(&answer).v.map(|v| v.raw.to_vec())
    }
}

fn response(datagram: &[u8]) -> Response<'_> {
    match parse(datagram).unwrap() {
        Message::Response { r, .. } => r,
        other => panic!("not an answer: {other:?}"),
    }
}

fn is_answer(datagram: &[u8]) -> bool {
    matches!(parse(datagram), Ok(Message::Response { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announce_flood_from_one_host_leaves_the_honest_worker() {
    let (a, b) = two_grapes(grenache_tokio::grape::node::ITEMS).await;
    let honest = PeerAddr::new([127, 0, 0, 1], HONEST_PORT);
    let answer = post_until_ok(
        &b,
        "/announce",
        &format!(r#"{{"data":["svc",{HONEST_PORT}],"rid":"1"}}"#),
    )
    .await;
    assert_eq!(answer, "1", "B announced to A only");
    let mut witness = Krpc::bind(Ipv4Addr::LOCALHOST, &a).await;
    assert_eq!(witness.stored_peers(b"svc").await, vec![honest]);

    let mut attacker = Krpc::bind(Ipv4Addr::new(127, 0, 0, 2), &a).await;
    let token = attacker.token().await;
    attacker.become_contact().await;
    let id = attacker.id;
    // 150 announces of the name (the per-name cap is 100).
    let answers = attacker
        .run(150, |q, t, i| {
            encode_announce_peer(q, t, &id, b"svc", 1 + i as u16, false, &token).unwrap()
        })
        .await;
    assert_eq!(answers.iter().filter(|a| is_answer(a)).count(), 150);
    let stored = witness.stored_peers(b"svc").await;
    assert_eq!(stored.len(), 100, "the name is full");
    assert!(stored.contains(&honest), "the honest worker was pushed out");

    // More announces of other names than the store holds (10,240 entries).
    let flood = grenache_tokio::grape::node::PEERS + 1000;
    let answers = attacker
        .run(flood, |q, t, i| {
            let name = format!("junk:{i}");
            encode_announce_peer(q, t, &id, name.as_bytes(), 1, false, &token).unwrap()
        })
        .await;
    let answered = answers.iter().filter(|a| is_answer(a)).count();
    assert!(
        answered > grenache_tokio::grape::node::PEERS,
        "{answered} answered"
    );
    assert!(
        witness.stored_peers(b"svc").await.contains(&honest),
        "the store flood evicted the honest worker"
    );
    // The attacker's latest names are stored: the flood did fill the store.
    assert_eq!(
        witness
            .stored_peers(format!("junk:{}", flood - 1).as_bytes())
            .await,
        vec![PeerAddr::new([127, 0, 0, 2], 1)]
    );
    assert!(witness.stored_peers(b"junk:0").await.is_empty());

    let lookup = post(&a, "/lookup", r#"{"data":"svc","rid":"2"}"#).await;
    assert!(
        lookup.contains(&format!("\"127.0.0.1:{HONEST_PORT}\"")),
        "{lookup}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_flood_from_one_host_leaves_the_honest_item() {
    const MAX_VALUES: usize = 300;
    let (a, b) = two_grapes(MAX_VALUES).await;
    let key = post_until_ok(&b, "/put", r#"{"data":{"v":"honest value"},"rid":"1"}"#).await;
    let key_hex = key.trim_matches('"').to_owned();
    let key_bytes: [u8; 20] = hex::decode(&key_hex).unwrap().try_into().unwrap();
    let mut witness = Krpc::bind(Ipv4Addr::LOCALHOST, &a).await;
    assert_eq!(
        witness.stored_item(&key_bytes).await.as_deref(),
        Some(&b"12:honest value"[..])
    );

    let mut attacker = Krpc::bind(Ipv4Addr::new(127, 0, 0, 2), &a).await;
    let token = attacker.token().await;
    attacker.become_contact().await;
    let id = attacker.id;
    let flood = 3 * MAX_VALUES;
    let answers = attacker
        .run(flood, |q, t, i| {
            let v = format!("{i:08}");
            let v = format!("{}:{v}", v.len());
            encode_put_immutable(q, t, &id, &token, v.as_bytes()).unwrap()
        })
        .await;
    assert_eq!(answers.iter().filter(|a| is_answer(a)).count(), flood);
    assert_eq!(
        witness.stored_item(&key_bytes).await.as_deref(),
        Some(&b"12:honest value"[..]),
        "the put flood evicted the honest item"
    );
    // The store is full of the attacker's latest items, not more.
    let latest = grenache_core::dht::bep44::immutable_key(format!("8:{:08}", flood - 1).as_bytes());
    assert!(witness.stored_item(&latest).await.is_some());
    let dropped =
        grenache_core::dht::bep44::immutable_key(format!("8:{:08}", flood - MAX_VALUES).as_bytes());
    assert!(witness.stored_item(&dropped).await.is_none());

    let got = post(&a, "/get", &format!(r#"{{"data":"{key_hex}","rid":"2"}}"#)).await;
    assert!(got.contains(r#""v":"honest value""#), "{got}");
    a.stop().await;
    b.stop().await;
}
